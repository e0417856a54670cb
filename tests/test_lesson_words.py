"""A lesson's markdown states only what does not depend on the run: the paper's numbers, the
project's constants and parameters, and references (eq. 12, Table 4, lesson 06). A number the
notebook computes belongs in a code cell that prints it (`display(Markdown(...))`), so that the
words follow the numbers when the model changes.

The check: every digit group in a markdown cell of notebooks/NN_*.py must be explained by one of
- a reference ("eq. 6–8", "Table 4", "Fig. B.1", "lesson 06", "supplementary A", ...),
- a value of `cosuda.paper_results` (PAPER_RESULTS, TABLE5, ...), as printed (rounded) or in %,
- a constant of `cosuda.config` (the presets, SYNTHETIC_STAGES) or an image size (320x180),
- a number in the notebook's own parameters cell (its defaults are the lesson's setting),
- GENERAL (mathematical constants) or the notebook's entry in ALLOWED, each with a reason.
Digits inside identifiers (mIoU19, ResNet-101, GTA5), `code spans` (commands, paths) and
headings' lesson numbers are not numbers of the text.
"""
import dataclasses
import functools
import math
import re
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PY = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))

# Every lesson: its markdown states no computed number.
CHECKED = sorted(p.stem for p in PY)

# Numbers any lesson may state: their reason.
GENERAL = {
    "0": "the ends of a range of cosines or shares, 'T_cos = 0'",
    "1": "the ends of a range of cosines or shares, 'one point'",
    "95": "the 95 % interval of every paired comparison",
    "100": "a percentage's whole",
    "255": "the ignore label of every label map",
    "2048": "the channels of ResNet-101's layer4, the paper's feature dimension",
}

# Per notebook: number as written -> why it is a constant, not a result of the run.
ALLOWED: dict[str, dict[str, str]] = {
    "01_datasets": {"13": "the paper's SYNTHIA classes (mIoU13, Table 3 caption)"},
    "03_pseudo_labels": {"4096": "the bins of cosuda.pseudo.ThresholdEstimator's histograms (its default)",
                         "12": "the reference code's (BDL's) memory for Cityscapes' confidences: a fact about that code"},
    "05_feature_dictionary": {"4": "the toy's ids and the exercise's dict-size: inputs the lesson chose",
                              "14,600": "DeepLabV2's layer4 cells of a 1280x720 image at output stride 8 (about 161 x 91)"},
    "06_cosine_loss": {"8385": "DeepLabV2's 129x65 feature map of a 1024x512 image at output stride 8 "
                                "(lessons.PAPER_SCALE)"},
    "07_adapt": {"1.05": "the paper's Ours − only SSL, Table 4 (real data)"},
    "08_ablations": {"150": "the grid's evaluation interval: its 600 iterations over 4 evaluations",
                     "4.303": "Student's t quantile for 2 degrees of freedom (a table value)"},
    "09_hyperparameters": {"14,400": "160x90, the paper's layer4 map of a 1280x720 image",
                           "240": "20x12, the synthetic layer4 map of a 320x180 image at output stride 16"},
    "10_adversarial": {"64": "the discriminator's channels (AdaptSegNet)", "128": "the same", "256": "the same",
                       "1.5": "the paper's Ours-(11) − Adversarial, Table 1 (real data)"},
    "12_scale_out": {"4": "the GPU count of the example shell command: a choice of the example",
                     "0.85": "the README's scaling target for N GPUs: a goal, not a measurement"},
    "13_cosine_loss_2d": {"0.64": "cos 50°: the geometry of the toy's default angles and gap",
                          "130": "the angle between the toy's default person and vegetation directions"},
}

REFERENCE = re.compile(
    r"\b(?:eqs?\.|equations?|tables?|figs?\.|figures?|sections?|lessons?|notebooks?|supplementary|suppl\.|"
    r"exercises?|step)\s*[A-Z]?[\d.]*\d(?:\s*(?:[-–,/]|and|or)\s*[A-Z]?[\d.]*\d)*", re.IGNORECASE)
# Image and matrix sizes (320x180, 19 classes x 2500), exponents (2.5e-4, $10^3$), the 2-D of the
# toy, an equation's tag "(12)" in a display formula, a list item's or an exercise's number.
NOT_A_RESULT = re.compile(r"\d+ ?x ?\d+|\d+(?:\.\d+)?e-?\d+|\^\{?-?\d+\}?|\d+-D\b|\\qquad \(\d+\)|"
                          r"^\s*(?:\*\*)?\d+\.(?:\*\*)?\s|\(model \d\)")
# Words that contain digits: mIoU19, ResNet-101, FCN-8s, GTA5, layer4.
IDENTIFIER = re.compile(r"[A-Za-z_]\w*(?:[-.]\w+)*")
NUMBER = re.compile(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?")


def cells(path: Path) -> list[tuple[str, str]]:
    """(kind, text) per cell of a jupytext percent-format .py; kind is 'markdown', 'parameters'
    or 'code'; markdown text without its leading '# '."""
    out, kind, lines = [], None, []
    for line in path.read_text().splitlines() + ["# %%"]:
        if line.startswith("# %%"):
            if kind is not None:
                out.append((kind, "\n".join(lines)))
            kind = ("markdown" if "[markdown]" in line else "parameters" if '"parameters"' in line else "code")
            lines = []
        else:
            lines.append(re.sub(r"^# ?", "", line) if kind == "markdown" else line)
    return out


def numbers_in(text: str) -> list[str]:
    """The digit groups of a markdown text that are numbers of the text (see the module doc)."""
    return [n for n, _ in numbers_with_percent(text)]


def numbers_with_percent(text: str) -> list[tuple[str, bool]]:
    """numbers_in's numbers, each with whether a "%" follows it (shown as a percentage)."""
    text = re.sub(r"`[^`]*`", " ", text)  # commands, paths, parameters
    text = re.sub(r"^#+\s*\d+\s*—", " ", text, flags=re.MULTILINE)  # "# 08 — title"
    text = REFERENCE.sub(" ", text)
    text = NOT_A_RESULT.sub(" ", text)
    text = IDENTIFIER.sub(" ", text)
    return [(m.group(), bool(re.match(r"\s*%", text[m.end():]))) for m in NUMBER.finditer(text)]


def _values(obj) -> list[float]:
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [] if math.isnan(obj) else [float(obj)]
    if isinstance(obj, dict):
        return [v for x in list(obj.values()) + list(obj.keys()) for v in _values(x)]
    if isinstance(obj, (list, tuple, set)):
        return [v for x in obj for v in _values(x)]
    return []


@functools.lru_cache(maxsize=1)
def constants() -> list[float]:
    """The paper's numbers and the project's constants, as floats."""
    from cosuda import config, paper_results

    values = []
    for name in dir(paper_results):
        if name.isupper():
            values += _values(getattr(paper_results, name))
    values += _values(config.SYNTHETIC_STAGES) + _values(config.SYNTHETIC) + _values(config.PRESETS)
    for preset in config.PRESETS:  # with the RunConfig defaults (output stride, betas, lr, ...)
        values += _values(dataclasses.asdict(config.make_config(preset)))
    return tuple(sorted(set(values)))


def _matches(written: str, values: list[float], percent: bool = False) -> bool:
    """Whether a value, rounded as the text writes it, gives `written`; as a percentage only where
    the text shows one ("60 %") and the value is a fraction in [0, 1] (T_cos 0.6 explains "60 %",
    not a computed "60")."""
    x = float(written.replace(",", ""))
    decimals = len(written.split(".")[1]) if "." in written else 0
    half = 0.5 * 10 ** -decimals + 1e-9
    return any(abs(v - x) <= half or (percent and 0 <= v <= 1 and abs(100 * v - x) <= half) for v in values)


def flagged(path: Path, markdown: list[str] | None = None, values: list[float] | None = None) -> list[str]:
    """The numbers in the notebook's markdown (or in `markdown`, for the self-test) that nothing
    explains, each with its line."""
    all_cells = cells(path) if path.is_file() else []
    params = "\n".join(t for k, t in all_cells if k == "parameters")
    allowed = _values([float(n.replace(",", "")) for n in NUMBER.findall(params)])
    allowed += list(constants()) if values is None else values
    extra = dict(GENERAL, **ALLOWED.get(path.stem, {}))
    texts = markdown if markdown is not None else [t for k, t in all_cells if k == "markdown"]
    out = []
    for text in texts:
        for line in text.splitlines():
            for n, percent in numbers_with_percent(line):
                if n not in extra and not _matches(n, allowed, percent):
                    out.append(f"{n!r} in: {line.strip()}")
    return out


def test_self_test_flags_a_computed_number():
    # A caption that types a result must fail; the same caption with a reference and a paper value passes.
    bad = ["On the grid the two curves lie within 0.37 points; car rises from 60 to 79 %."]
    assert [f.split(" in:")[0] for f in flagged(Path("99_fake.py"), bad, values=[])] == ["'0.37'", "'60'", "'79'"]
    good = ["Table 4 and eq. 12 (lesson 06): the paper reports 49.7 mIoU19 on 1280x720 images, `-p seed 3`."]
    assert flagged(Path("99_fake.py"), good, values=[49.7]) == []
    # A fraction explains its percentage only where the text shows a percentage.
    share = ["T_cos = 0.6 selects 60 % of the pairs; the model keeps 60 of them."]
    assert [f.split(" in:")[0] for f in flagged(Path("99_fake.py"), share, values=[0.6])] == ["'60'"]


def test_every_notebook_is_checked():
    assert len(CHECKED) >= 13 and all((NOTEBOOKS / f"{name}.py").is_file() for name in CHECKED)
    assert set(ALLOWED) <= set(CHECKED), "an allow-list for a notebook that does not exist"


@pytest.mark.parametrize("name", CHECKED)
def test_markdown_states_no_computed_number(name):
    found = flagged(NOTEBOOKS / f"{name}.py")
    assert not found, (f"{name}: markdown states numbers that are neither the paper's, a constant nor a "
                       "parameter; print them from a code cell, or allow-list a constant with its reason:\n"
                       + "\n".join(found))
