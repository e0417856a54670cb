"""The 2-D cosine-loss experiment (cosuda.toy2d, notebook 13): the qualitative claims its pictures
make, checked on the numbers. The method aligns every class; without the dictionary an absent
class does not move at all; without the class-wise split target vectors end in other classes;
T_cos selects exactly the pairs with M > T_cos; everything is deterministic."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from cosuda import plots, toy2d  # noqa: E402
from cosuda.method import FeatureDictionary, class_similarity, cosine_loss_reference  # noqa: E402


@pytest.fixture(scope="module")
def problem():
    return toy2d.make_problem(steps=40, seed=0)


@pytest.fixture(scope="module")
def runs(problem):
    return toy2d.experiment(problem, t_cos=0.6, lr=2.0)


@pytest.fixture(scope="module")
def noisy():
    return toy2d.make_problem(steps=40, seed=0, mislabelled=0.125)


def _rare(problem):
    return min(range(problem.num_classes), key=lambda c: problem.frequencies[c])


def test_the_problem_has_a_domain_gap_and_unmatched_classes(problem):
    angles = toy2d.relative_angles(problem, problem.target_init)
    assert abs(angles.mean().item() - problem.gap) < 5           # the target starts rotated by the gap
    assert toy2d.nearest_class_share(problem, problem.target_init).min() < 0.8  # ... which costs accuracy
    absent = problem.absent_steps()
    assert absent[_rare(problem)], "the rare class is in every source image: no unmatching problem to show"
    assert not absent[0]                                          # road (frequency 1) is in every image


def test_the_method_aligns_every_class(problem, runs):
    r = runs["method"]
    assert (r.own_cos[-1] > r.own_cos[0] + 0.15).all()
    assert (r.own_cos[-1] > 0.97).all(), r.own_cos[-1]
    assert torch.equal(r.nearest[-1], torch.ones(problem.num_classes, dtype=torch.float64))
    assert r.matched.all()                                         # the dictionary holds every class at every step
    assert (r.loss[-5:] < r.loss[:5].min()).all()


def test_without_the_dictionary_an_unmatched_class_does_not_move(problem, runs):
    r, method = runs["no_dictionary"], runs["method"]
    checked = 0
    for c, steps in problem.absent_steps().items():
        rows = problem.target_classes == c
        for t in steps:
            assert not r.matched[t, c]
            assert torch.equal(r.positions[t + 1][rows], r.positions[t][rows]), (c, t)  # exactly: no gradient
            assert not r.pulled[t, rows].any()
            # the dictionary still holds the class: some of its vectors are pulled at that very step
            assert method.matched[t, c] and method.moved(t)[rows].any(), (c, t)
            checked += 1
    assert checked >= 20
    rare = _rare(problem)
    absent = problem.absent_steps()[rare]
    runs_of_absence = [[absent[0]]]
    for t in absent[1:]:
        runs_of_absence[-1].append(t) if t == runs_of_absence[-1][-1] + 1 else runs_of_absence.append([t])
    longest = max(runs_of_absence, key=len)
    start, end = longest[0], longest[-1] + 1
    assert end - start >= 4
    assert torch.equal(r.own_cos[end, rare], r.own_cos[start, rare])  # frozen while absent from the images
    assert method.own_cos[end, rare] > method.own_cos[start, rare] + 0.02  # the dictionary keeps pulling it
    # over the whole run the rare class lags behind (the area under its alignment curve)
    assert method.own_cos[:, rare].mean() > r.own_cos[:, rare].mean() + 0.03


def test_without_the_split_target_vectors_end_in_other_classes(problem, runs):
    r, method = runs["no_split"], runs["method"]
    wrong_end = r.nearest_class[-1] != problem.target_classes
    assert wrong_end.sum() >= 10
    assert (method.nearest_class[-1] == problem.target_classes).all()
    assert r.accuracy[-1] < method.accuracy[-1] - 0.2
    assert r.accuracy[-1] < r.accuracy[0]                          # worse than before any step
    rare = _rare(problem)
    assert r.own_cos[-1, rare] < r.own_cos[0, rare] - 0.3         # pulled away from its own class
    assert sum(s.cross_class.sum().item() for s in r.selections) > 0
    for name in ("method", "no_dictionary"):                      # the split never pairs two classes
        assert all(s.cross_class.sum().item() == 0 for s in runs[name].selections)


def test_the_selection_is_exactly_m_above_t_cos_and_decides_the_gradient(problem, runs):
    t = 8
    # the method's bank at step t is the dictionary after the fill and the images 0..t
    d = FeatureDictionary(problem.num_classes, problem.dict_size, 2, dtype=torch.float64)
    d.enqueue(problem.fill, problem.fill_classes)
    for feats, classes in problem.images[:t + 1]:
        d.enqueue(feats, classes)
    sel, x = runs["method"].selections[t], runs["method"].positions[t]
    for c in range(problem.num_classes):
        rows, cols = problem.target_labels == c, sel.bank_classes == c
        assert torch.equal(sel.bank[cols], d.get(c))
        m = class_similarity(x[rows], d.get(c))                    # eq. 9
        assert torch.equal(sel.selected[rows][:, cols], m > 0.6)  # M-hat: the elements above T_cos
        assert not sel.selected[rows][:, ~cols].any()
    s_feats, _ = problem.images[t]
    nosplit = runs["no_split"]
    assert torch.equal(nosplit.selections[t].selected,
                       class_similarity(nosplit.positions[t], s_feats) > 0.6)
    for r in runs.values():                                         # a gradient exactly where a pair is selected
        for step, s in enumerate(r.selections):
            assert torch.equal(r.pulled[step], s.selected.any(dim=1)), (r.setting, step)


def test_the_loss_is_the_package_loss(problem, runs):
    r = runs["method"]
    again = toy2d.run(problem, "method", t_cos=0.6, lr=2.0, impl="reference")
    assert torch.allclose(again.positions, r.positions, atol=1e-12)
    t = 3
    s_feats, s_classes = problem.images[t]
    bank = [s_feats[s_classes == c] for c in range(problem.num_classes)]
    ref = cosine_loss_reference(runs["no_dictionary"].positions[t], problem.target_labels, bank, 0.6,
                                problem.num_classes)
    assert torch.allclose(runs["no_dictionary"].loss[t], ref, atol=1e-12)


def test_t_cos_trades_dragged_errors_against_vectors_left_alone(noisy):
    assert noisy.mislabelled.sum() == 8
    sweep = toy2d.threshold_sweep(noisy, [-1.0, 0.0, 0.6, 0.9], settings=("method",))["method"]
    selected = sweep["points_selected"]
    assert (selected[:-1] >= selected[1:]).all() and (sweep["pairs_selected"][:-1] >= sweep["pairs_selected"][1:]).all()
    dragged, alone = sweep["dragged"], sweep["never_pulled"]
    assert dragged[0] == 1.0                   # no threshold: every mislabelled vector joins its wrong label
    assert dragged[2] <= 0.25                  # T_cos = 0.6: most are left alone (they resemble nothing there)
    assert alone[3] > alone[2] + 0.15          # T_cos = 0.9: many correct vectors are left alone too
    assert sweep["nearest_end"][2] > max(sweep["nearest_end"][0], sweep["nearest_end"][3])


def test_deterministic_given_the_seed():
    a, b = toy2d.make_problem(steps=12, seed=3), toy2d.make_problem(steps=12, seed=3)
    assert torch.equal(a.target_init, b.target_init) and torch.equal(a.target_labels, b.target_labels)
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a.images, b.images))
    for setting in toy2d.SETTINGS:
        assert torch.equal(toy2d.run(a, setting).positions, toy2d.run(b, setting).positions)
    c = toy2d.make_problem(steps=12, seed=4)
    assert not torch.equal(a.target_init, c.target_init)


def test_norms_do_not_change_the_measures(problem):
    x = problem.target_init
    assert torch.allclose(toy2d.own_class_cosine(problem, 3.0 * x), toy2d.own_class_cosine(problem, x))
    assert torch.equal(toy2d.nearest_class_share(problem, 3.0 * x), toy2d.nearest_class_share(problem, x))


def test_bad_input_raises(problem):
    with pytest.raises(ValueError, match="setting"):
        toy2d.run(problem, "no_threshold")
    with pytest.raises(ValueError, match="T_cos"):
        toy2d.run(problem, t_cos=1.5)
    with pytest.raises(ValueError, match="lr"):
        toy2d.run(problem, lr=0.0)
    with pytest.raises(ValueError, match="one entry per class"):
        toy2d.make_problem(frequencies=(1.0, 0.5))
    with pytest.raises(ValueError, match="frequencies"):
        toy2d.make_problem(frequencies=(1.0, 0.5, 1.5, 0.2))
    with pytest.raises(ValueError, match="steps"):
        toy2d.make_problem(steps=0)
    with pytest.raises(ValueError, match="mislabelled"):
        toy2d.make_problem(mislabelled=1.0)
    with pytest.raises(ValueError, match="threshold"):
        toy2d.threshold_sweep(problem, [])
    with pytest.raises(ValueError, match="select_pairs"):
        toy2d.select_pairs(problem.target_init, problem.target_labels[:3], problem.fill, problem.fill_classes, 0.5)
    with pytest.raises(ValueError, match="steps"):
        plots.toy_steps(problem, {"method": toy2d.run(problem)}, [0, problem.steps + 1])


def test_every_figure_draws(problem, runs, noisy):
    sel = toy2d.run(noisy, "method", t_cos=0.6)
    figs = [plots.toy_problem(problem), plots.toy_steps(problem, runs, [0, 5, problem.steps]),
            plots.toy_angles(problem, runs), plots.toy_alignment(runs, problem.names, highlight=3),
            plots.toy_pairs(noisy, [("T_cos = 0.6", sel.positions[0], sel.selections[0])]),
            plots.toy_threshold_sweep(toy2d.threshold_sweep(noisy, [0.0, 0.9]), mark=0.6)]
    assert all(isinstance(f, matplotlib.figure.Figure) for f in figs)
    for f in figs:
        plt.close(f)
