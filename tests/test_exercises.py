"""The exercises of notebooks 01, 03-06 and 08: reference answers pass, typical wrong answers fail with
a hint, None / ... is "not yet"; and the stored notebooks show every check passing."""
import ast
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cosuda import lessons, method, results
from cosuda.exercises import Result
from cosuda.exercises import ablations as ex_abl
from cosuda.exercises import cosine_loss as ex_cos
from cosuda.exercises import datasets as ex_data
from cosuda.exercises import dictionary as ex_dict
from cosuda.exercises import processes as ex_proc
from cosuda.exercises import pseudo_labels as ex_pseudo
from cosuda.exercises.student import student_notebook
from cosuda.labels import CLASS_NAMES, IGNORE_INDEX

torch.set_num_threads(2)
NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
MINE = ["01_datasets", "03_pseudo_labels", "04_processes_a_b", "05_feature_dictionary", "06_cosine_loss"]


def passes(result):
    assert isinstance(result, Result) and result.ok, result
    return result


def fails(result, hint=""):
    assert isinstance(result, Result) and not result.ok, result
    assert result.message and hint.lower() in result.message.lower(), result.message
    return result


def not_yet(check, *args, **kw):
    for empty in (None, ...):
        fails(check(empty, *args, **kw), "no answer yet")


# ------------------------------------------------------------------------------ 01 datasets
COUNTS_A = np.array([500, 100, 400] + [0] * 16, dtype=np.int64)   # road, sidewalk, building
COUNTS_B = np.array([3000, 200, 1000] + [0] * 15 + [300], dtype=np.int64)  # ... and bicycle


def test_largest_share_difference():
    share_a, share_b = 100 * COUNTS_A / COUNTS_A.sum(), 100 * COUNTS_B / COUNTS_B.sum()
    answer = CLASS_NAMES[int(np.argmax(np.abs(share_a - share_b)))]
    passes(ex_data.check_largest_share_difference(answer, COUNTS_A, COUNTS_B))
    passes(ex_data.check_largest_share_difference(CLASS_NAMES.index(answer), COUNTS_A, COUNTS_B))
    assert answer == "building"  # 40% vs 22%; road differs most in counts but less in shares
    fails(ex_data.check_largest_share_difference("road", COUNTS_A, COUNTS_B), "counts")
    fails(ex_data.check_largest_share_difference("bicycle", COUNTS_A, COUNTS_B), "np.abs")
    fails(ex_data.check_largest_share_difference("cat", COUNTS_A, COUNTS_B), "not a class")
    not_yet(ex_data.check_largest_share_difference, COUNTS_A, COUNTS_B)


def test_absent_classes():
    truth = [CLASS_NAMES[c] for c in range(3, 19)]
    passes(ex_data.check_absent_classes(truth, COUNTS_A))
    passes(ex_data.check_absent_classes(list(range(3, 19)), COUNTS_A))
    fails(ex_data.check_absent_classes(truth + ["road"], COUNTS_A), "do(es) occur")
    fails(ex_data.check_absent_classes(truth[:-1], COUNTS_A), "more class")
    not_yet(ex_data.check_absent_classes, COUNTS_A)


# ------------------------------------------------------------------------------ 03 pseudo-labels
def confidences(seed=0):
    g = torch.Generator().manual_seed(seed)
    probs = (torch.randn(2, 4, 10, 12, generator=g) * 2).softmax(1)
    return probs.max(1)


def test_threshold():
    confidence, predicted = confidences()
    c = 2
    reference = min(confidence[predicted == c].median().item(), 0.9)   # the notebook's solution
    passes(ex_pseudo.check_threshold(reference, confidence, predicted, c))
    passes(ex_pseudo.check_threshold(float(np.median(confidence[predicted == c].numpy())), confidence, predicted, c))
    skewed, zeros = torch.tensor([0.3, 0.31, 0.32, 0.9, 0.95]), torch.zeros(5, dtype=torch.long)
    fails(ex_pseudo.check_threshold(skewed.mean().item(), skewed, zeros, 0), "mean")
    fails(ex_pseudo.check_threshold(0.0, confidence, predicted, c), "median")
    fails(ex_pseudo.check_threshold("high", confidence, predicted, c), "one number")
    not_yet(ex_pseudo.check_threshold, confidence, predicted, c)
    # a class whose median is above the cap
    confident = torch.tensor([0.95, 0.97, 0.99, 0.5])
    classes = torch.tensor([1, 1, 1, 0])
    passes(ex_pseudo.check_threshold(0.9, confident, classes, 1))
    fails(ex_pseudo.check_threshold(0.97, confident, classes, 1), "sets tau to 0.9")


def test_precision():
    pseudo = torch.tensor([0, 0, 0, 0, 1, 255])
    label = torch.tensor([0, 0, 1, 255, 1, 0])
    kept_road = (pseudo == 0) & (label != 255)
    reference = ((label == 0) & kept_road).sum().item() / kept_road.sum().item()  # the notebook's solution
    assert reference == pytest.approx(2 / 3)
    passes(ex_pseudo.check_precision(reference, pseudo, label, "road"))
    fails(ex_pseudo.check_precision(100 * reference, pseudo, label, 0), "percentage")
    fails(ex_pseudo.check_precision(2 / 4, pseudo, label, 0), "255")
    fails(ex_pseudo.check_precision(0.9, pseudo, label, 0), "pseudo == c")
    fails(ex_pseudo.check_precision(0.5, torch.tensor([1, 1]), torch.tensor([255, 255]), 1), "no labelled pixel")
    not_yet(ex_pseudo.check_precision, pseudo, label, 0)


def test_recall_is_not_precision():
    pseudo = torch.tensor([0, 1, 1, 1])
    label = torch.tensor([0, 0, 0, 1])
    fails(ex_pseudo.check_precision(1 / 3, pseudo, label, 0), "recall")


# ------------------------------------------------------------------------------ 04 processes A and B
def process_a_reference(features, logits, labels):  # the notebook's solution
    hw = features.shape[-2:]
    c_max = method.resize_nearest(logits.argmax(dim=1), hw)
    y_tilde = method.resize_nearest(labels, hw)
    keep = (c_max == y_tilde).flatten()
    rows = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    return rows[keep], c_max.flatten()[keep]


def process_b_reference(features, logits, pseudo_labels=None):  # the notebook's solution
    hw = features.shape[-2:]
    classes = method.resize_nearest(logits.argmax(dim=1), hw)
    if pseudo_labels is not None:
        y_tilde = method.resize_nearest(pseudo_labels, hw)
        classes = torch.where(y_tilde == IGNORE_INDEX, classes, y_tilde)
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]), classes.flatten()


def test_process_a():
    passes(ex_proc.check_process_a(process_a_reference))
    passes(ex_proc.check_process_a(method.process_a))

    def everything(features, logits, labels):
        return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]), logits.argmax(1).flatten()

    def channel_order(features, logits, labels):  # flattens (b, k, ...) wrongly: other rows
        f, c = process_a_reference(features, logits, labels)
        return f.flip(0), c.flip(0)

    def no_resize(features, logits, labels):
        keep = (logits.argmax(1) == labels).flatten()
        return features.flatten(2).transpose(1, 2).reshape(-1, features.shape[1])[keep], labels.flatten()[keep]

    fails(ex_proc.check_process_a(everything), "every vector")
    fails(ex_proc.check_process_a(channel_order), "(b, y, x) order")
    fails(ex_proc.check_process_a(no_resize), "raised")
    fails(ex_proc.check_process_a(lambda *a: 3), "pair of tensors")
    fails(ex_proc.check_process_a(process_a_reference(*ex_proc.random_case(0))), "function itself")
    not_yet(ex_proc.check_process_a)


def test_process_b():
    passes(ex_proc.check_process_b(process_b_reference))

    def keeps_ignore(features, logits, pseudo_labels=None):
        f, c = process_b_reference(features, logits, None)
        if pseudo_labels is not None:
            c = method.resize_nearest(pseudo_labels, features.shape[-2:]).flatten()
        return f, c

    def drops_ignored(features, logits, pseudo_labels=None):
        f, c = process_b_reference(features, logits, pseudo_labels)
        return f[:-1], c[:-1]

    fails(ex_proc.check_process_b(keeps_ignore), "255 is left")
    fails(ex_proc.check_process_b(drops_ignored), "every target vector")
    fails(ex_proc.check_process_b(process_a_reference), "every target vector")
    not_yet(ex_proc.check_process_b)


def test_wrong_classes_name_the_whole_process():
    """The hint names "process A" / "process B", not the first word of "process B (eq. 7)"."""
    def other_classes_b(features, logits, pseudo_labels=None):
        f, c = process_b_reference(features, logits, pseudo_labels)
        return f, (c + 1) % 19

    def other_vectors_a(features, logits, labels):
        f, c = process_a_reference(features, logits, labels)
        return f + 1, c

    b = fails(ex_proc.check_process_b(other_classes_b), "than process B keeps")
    assert "process B (eq. 7): same shapes" in b.message, b.message
    fails(ex_proc.check_process_a(other_vectors_a), "than process A keeps")


def test_the_student_stub_of_notebook_04_defines_the_function_the_check_expects():
    nb = nbformat.read(NOTEBOOKS / "04_processes_a_b.ipynb", as_version=4)
    student = student_notebook(nb)
    stubs = [c.source for c in student.cells if "answer" in c.metadata.get("tags", [])]
    assert len(stubs) == 2
    for stub, name, function, check in ((stubs[0], "answer_a", "process_a_mine", ex_proc.check_process_a),
                                        (stubs[1], "answer_b", "process_b_mine", ex_proc.check_process_b)):
        assert f"def {function}(" in stub and f"{name} = {function}" in stub, stub
        assert "permute" not in stub and "return" not in stub, stub  # the body is the student's
        namespace = {}
        exec(stub, namespace)  # the stub runs as it is, and the check says what is missing
        assert callable(namespace[name]) and namespace[name].__name__ == function
        fails(check(namespace[name]), "returns None")
        fails(check(5), f"{name} = {function}")  # a wrong kind of answer is told the name of the stub


def test_random_case_is_a_fair_test():
    features, logits, labels = ex_proc.random_case(0)
    kept, _ = method.process_a(features, logits, labels)
    assert 0 < kept.shape[0] < features.shape[0] * features.shape[2] * features.shape[3]
    assert (labels == 255).any()


# ------------------------------------------------------------------------------ 05 dictionary
BATCHES = [([0, 1, 2, 3], [0, 1, 0, 0]), ([4, 5, 6], [1, 0, 1]), ([7, 8, 9], [0, 0, 1])]


def test_remaining():
    ids_of_class_0 = [i for ids, classes in BATCHES for i, c in zip(ids, classes) if c == 0]  # the solution
    reference = ids_of_class_0[-4:]
    assert reference == ex_dict.queue_contents(BATCHES, 4, 0) == [3, 5, 7, 8]
    passes(ex_dict.check_remaining(reference, BATCHES, 4, 0))
    passes(ex_dict.check_remaining(reference[::-1], BATCHES, 4, 0))  # any order
    fails(ex_dict.check_remaining(ids_of_class_0[:4], BATCHES, 4, 0), "oldest")
    fails(ex_dict.check_remaining([3, 5, 7, 9], BATCHES, 4, 0), "own queue")
    fails(ex_dict.check_remaining(ids_of_class_0, BATCHES, 4, 0), "at most 4")
    fails(ex_dict.check_remaining([3, 5, 8], BATCHES, 4, 0), "arrival order")
    fails(ex_dict.check_remaining("3578", BATCHES, 4, 0), "list of ids")
    fails(ex_dict.check_remaining(5, BATCHES, 4, 0), "list of ids")
    not_yet(ex_dict.check_remaining, BATCHES, 4, 0)


def test_memory():
    reference = 19 * 2500 * 2048 * 2 / 1e6
    passes(ex_dict.check_memory(reference, 19, 2500, 2048, torch.float16))
    passes(ex_dict.check_memory(reference * 1e6 / 2 ** 20, 19, 2500, 2048, torch.float16))  # MiB
    fails(ex_dict.check_memory(reference * 1e6, 19, 2500, 2048, torch.float16), "bytes")
    fails(ex_dict.check_memory(2 * reference, 19, 2500, 2048, torch.float16), "not 4")
    fails(ex_dict.check_memory(1.0, 19, 2500, 2048, torch.float16), "multiply")
    not_yet(ex_dict.check_memory, 19, 2500, 2048)


# ------------------------------------------------------------------------------ 06 cosine loss
def loss_case():
    g = torch.Generator().manual_seed(5)
    feats = torch.rand(30, 8, generator=g)  # non-negative like ReLU features: similarities spread over [0, 1]
    classes = torch.randint(0, 3, (30,), generator=g)
    d = method.FeatureDictionary(19, 6, 8)
    d.enqueue(torch.rand(20, 8, generator=g), torch.randint(0, 3, (20,), generator=g))
    return feats, classes, d


def test_selected_count():
    feats, classes, d = loss_case()
    unit = F.normalize(feats, dim=1)  # the notebook's solution
    reference = sum(int((unit[classes == c] @ F.normalize(d.get(c), dim=1).T > 0.8).sum()) for c in range(19))
    passes(ex_cos.check_selected_count(reference, feats, classes, d, 0.8))
    sel = lessons.select(lessons.class_similarity_matrices(feats, classes, d), 0.8)
    assert 0 < sel.total_selected < sel.total_elements
    fails(ex_cos.check_selected_count(sel.total_elements, feats, classes, d, 0.8), "every element")
    pooled = sum(int((unit @ F.normalize(d.get(c), dim=1).T > 0.8).sum()) for c in range(19))
    fails(ex_cos.check_selected_count(pooled, feats, classes, d, 0.8), "own class")
    fails(ex_cos.check_selected_count(reference // 2, feats, classes, d, 0.8), "add the counts")
    fails(ex_cos.check_selected_count(2.5, feats, classes, d, 0.8), "whole number")
    not_yet(ex_cos.check_selected_count, feats, classes, d, 0.8)


def test_unmatched():
    target, source = torch.tensor([0, 0, 1, 13, 13]), torch.tensor([0, 2])
    reference = sorted(set(target.tolist()) - set(source.tolist()))  # the notebook's solution
    passes(ex_cos.check_unmatched(reference, target, source))
    passes(ex_cos.check_unmatched(["sidewalk", "car"], target, source))
    fails(ex_cos.check_unmatched([1, 13, 0], target, source), "road")
    fails(ex_cos.check_unmatched([1, 13, 2], target, source), "source image has")
    fails(ex_cos.check_unmatched([1, 13, 5], target, source), "not among the target")
    fails(ex_cos.check_unmatched("car", target, source), "1 more")
    fails(ex_cos.check_unmatched(["car", "cat"], target, source), "not a class")
    not_yet(ex_cos.check_unmatched, target, source)


def test_mean_loss():
    feats, classes, d = loss_case()
    m = lessons.class_similarity_matrices(feats, classes, d)
    reference = float(np.mean([(1 - x[x > 0.8]).mean().item() for x in m.values() if (x > 0.8).any()]))
    passes(ex_cos.check_mean_loss(reference, m, 0.8))
    passes(ex_cos.check_mean_loss(method.cosine_loss(feats, classes, d, 0.8, 19, "mean"), m, 0.8))
    fails(ex_cos.check_mean_loss(method.cosine_loss(feats, classes, d, 0.8, 19, "sum").item(), m, 0.8), "sum reading")
    pooled = torch.cat([(1 - x[x > 0.8]).flatten() for x in m.values()]).mean().item()
    assert abs(pooled - reference) > 1e-3 * reference  # the case tells the two apart
    fails(ex_cos.check_mean_loss(pooled, m, 0.8), "mean per class")
    fails(ex_cos.check_mean_loss(1 - reference, m, 0.8), "1 - M")
    fails(ex_cos.check_mean_loss(0.0, m, 0.8), "1 - M[M > T_cos]")
    not_yet(ex_cos.check_mean_loss, m, 0.8)


# ------------------------------------------------------------------------------ 08 ablations
def test_changed_fields():
    truth = {"wo-dict": "cos", "wo-split": "cos", "with-adv": "adversarial"}
    passes(ex_abl.check_changed_fields(truth))
    passes(ex_abl.check_changed_fields({"wo-dict": ["cos"], "wo-split": {"cos"}, "with-adv": "adversarial"}))
    passes(ex_abl.check_changed_fields({"ssl-adv": "adversarial"}, base="only-ssl", ablations=("ssl-adv",)))
    # the paper's "class-wise split" is not the `split` field (eq. 7 / 8)
    fails(ex_abl.check_changed_fields({**truth, "wo-split": "split"}), "not the `split` field")
    fails(ex_abl.check_changed_fields({**truth, "wo-dict": {"cos", "target_seg"}}), "keeps target_seg = 'pseudo'")
    fails(ex_abl.check_changed_fields({**truth, "with-adv": "adv"}), "not a field of Variant")
    fails(ex_abl.check_changed_fields({"wo-dict": "cos"}), "wo-split, with-adv are missing")
    fails(ex_abl.check_changed_fields("cos"), "give a dict")
    not_yet(ex_abl.check_changed_fields)
    with pytest.raises(ValueError, match="no-such"):
        ex_abl.check_changed_fields({"no-such": "cos"}, ablations=("no-such",))


OURS, SSL = [34.20, 35.05, 33.10], [33.60, 34.85, 32.40]  # the notebook's imagined grid


def test_paired_interval():
    t = results.t_interval([a - b for a, b in zip(OURS, SSL)])
    truth = (t["mean"], t["low"], t["high"])
    assert truth == pytest.approx((0.5, -0.157, 1.157), abs=1e-3)  # every seed favours Ours, the interval holds 0
    passes(ex_abl.check_paired_interval(truth, OURS, SSL))
    passes(ex_abl.check_paired_interval((0.5, -0.16, 1.16), OURS, SSL))  # rounded to two decimals
    passes(ex_abl.check_paired_interval(t, OURS, SSL))  # t_interval's own dict
    fails(ex_abl.check_paired_interval((-0.5, -1.157, 0.157), OURS, SSL), "second row minus the first")
    fails(ex_abl.check_paired_interval((0.4, -0.16, 1.16), OURS, SSL), "subtract seed by seed")
    sd = float(np.std([a - b for a, b in zip(OURS, SSL)], ddof=1))
    for half, hint in ((1.96 * sd / 3 ** 0.5, "not the normal's 1.96"), (4.303 * sd, "square root of the number"),
                       (4.303 * sd * (2 / 3) ** 0.5 / 3 ** 0.5, "n - 1, not by n"), (1.0, "the seeds are paired")):
        fails(ex_abl.check_paired_interval((0.5, 0.5 - half, 0.5 + half), OURS, SSL), hint)
    fails(ex_abl.check_paired_interval((0.5, 1.16), OURS, SSL), "three numbers")
    not_yet(ex_abl.check_paired_interval, OURS, SSL)


DIFFERENCES = {("ours", "only-ssl"): [0.6, 0.2, 0.7, 0.4, 0.5],
               ("ours", "wo-dict"): [0.3, -0.2, 0.4, 0.1, -0.1],
               ("wo-split", "only-ssl"): [0.9, -0.4, 1.2, 0.3, 0.2],
               ("only-ssl", "ssl-adv"): [0.3, 0.5, 0.2, 0.4, 0.35]}


def test_claims():
    truth = {pair for pair, d in DIFFERENCES.items() if results.t_interval(d)["low"] > 0}
    assert truth == {("ours", "only-ssl"), ("only-ssl", "ssl-adv")} == ex_abl.holding_claims(DIFFERENCES)
    passes(ex_abl.check_claims(truth, DIFFERENCES))
    passes(ex_abl.check_claims(sorted(truth), DIFFERENCES))
    # the largest mean of the four, yet its interval includes 0
    fails(ex_abl.check_claims(truth | {("wo-split", "only-ssl")}, DIFFERENCES), "includes 0")
    fails(ex_abl.check_claims({("ours", "only-ssl")}, DIFFERENCES), "1 more pair has")
    fails(ex_abl.check_claims(set(), DIFFERENCES), "2 more pairs have")
    reversed_pair = {("only-ssl", "ours"), ("only-ssl", "ssl-adv")}
    fails(ex_abl.check_claims(reversed_pair, DIFFERENCES), "first row minus the second")
    fails(ex_abl.check_claims(truth | {("ours", "oracle")}, DIFFERENCES), "not one of the pairs")
    fails(ex_abl.check_claims(("ours", "only-ssl"), DIFFERENCES), "one pair is {(a, b)}")
    fails(ex_abl.check_claims("ours", DIFFERENCES), "set of pairs")
    not_yet(ex_abl.check_claims, DIFFERENCES)
    passes(ex_abl.check_claims(set(), {("a", "b"): [1.0, -1.0]}))  # no claim holds: the empty set is right


def _run_exercise_section(nb, stem):
    """Runs the cells of a notebook's exercise section (from "## Exercises" on) in one namespace,
    as the notebook would after its earlier cells; returns the results of its check cells."""
    start = next(i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and "## Exercises" in c.source)
    namespace, shown = {"results": results}, []
    for cell in nb.cells[start:]:
        if cell.cell_type != "code":
            continue
        tree = ast.parse(cell.source)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, stem, "exec"), namespace)
        if last is not None:
            shown.append(eval(compile(ast.Expression(last.value), stem, "eval"), namespace))
    return shown


def test_notebook_08_solutions_pass_their_checks_and_its_stubs_are_not_yet():
    """The lesson's exercise cells need only what they define (and `results`): every solution
    passes its own check, and in the student version every check says "not yet"."""
    nb = nbformat.read(NOTEBOOKS / "08_ablations.ipynb", as_version=4)
    checks = _run_exercise_section(nb, "08_ablations")
    assert len(checks) == 3
    for result in checks:
        passes(result)
    for result in _run_exercise_section(student_notebook(nb), "08_ablations (student)"):
        fails(result, "no answer yet")


# ------------------------------------------------------------------------------ the notebooks themselves
def _check_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and "ex.check_" in c.source]


@pytest.mark.parametrize("stem", MINE)
def test_stored_notebook_shows_every_reference_answer_passing(stem):
    path = NOTEBOOKS / f"{stem}.ipynb"
    if not path.exists():
        pytest.fail(f"{path.name} missing: run jupytext --to ipynb and execute it")
    nb = nbformat.read(path, as_version=4)
    checks = _check_cells(nb)
    assert 2 <= len(checks) <= 3, f"{stem}: expected 2-3 exercises, found {len(checks)}"
    for cell in checks:
        shown = "".join(o.get("data", {}).get("text/plain", "") for o in cell.outputs
                        if o.output_type == "execute_result")
        assert shown.startswith("Right"), f"{stem}: the check `{cell.source.splitlines()[-1]}` shows {shown!r}"


@pytest.mark.parametrize("stem", [*MINE, "08_ablations"])
def test_student_stubs_define_what_the_checks_read(stem):
    """The student version replaces each solution cell with `name = ...` stubs; the check cell after
    it must only need those names (so that it says "not yet" instead of raising NameError)."""
    nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    student = student_notebook(nb)
    for i, cell in enumerate(nb.cells):
        if "solution" not in cell.metadata.get("tags", []):
            continue
        check = next(c for c in nb.cells[i + 1:] if c.cell_type == "code")
        call = next(n for n in ast.walk(ast.parse(check.source))
                    if isinstance(n, ast.Call) and getattr(n.func, "attr", "").startswith("check_"))
        answer = call.args[0].id
        stub = student.cells[i].source
        namespace = {}
        exec(stub, namespace)  # the stub runs without the lesson's names and defines the answer
        assert answer in namespace, f"{stem}: the stub of cell {i} does not define {answer}:\n{stub}"
        assert namespace[answer] is Ellipsis or callable(namespace[answer]), f"{stem}: {answer} in\n{stub}"
