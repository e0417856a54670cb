"""The exercises of notebook 07: every reference answer passes, wrong ones get a hint, no answer is 'not yet'."""
import pytest

from cosuda.config import VARIANTS
from cosuda.exercises import adapt as ex

LOSSES = {"seg_s": 0.8, "seg_t": 0.6, "cos": 0.5, "total": 0.8 + 0.6 + 0.1 * 0.5}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_terms_reference_answer_passes_for_every_variant(variant):
    v = VARIANTS[variant]
    answer = {name for name, on in (("seg_s", v.source_seg), ("seg_t", v.target_seg != "none"),
                                      ("cos", v.cos != "none"), ("adv", v.adversarial)) if on}
    assert ex.check_terms(answer, variant)
    assert ex.check_terms(sorted(answer), variant)  # any iterable of names


def test_terms_wrong_answers_get_hints():
    assert ex.variant_terms("with-adv") == {"seg_s", "seg_t", "cos", "adv"}
    result = ex.check_terms({"seg_s", "cos"}, "with-adv")
    assert not result and "missing" in result.message
    result = ex.check_terms({"seg_s", "seg_t", "cos"}, "ours11")  # eq. 11 has no target segmentation
    assert not result and "seg_t" in result.message
    assert not ex.check_terms({"seg", "cos"}, "ours") and "seg" in ex.check_terms({"seg", "cos"}, "ours").message
    assert not ex.check_terms("seg_s", "source-only")
    with pytest.raises(ValueError, match="no-such"):
        ex.check_terms({"seg_s"}, "no-such")


def test_cos_share_reference_and_wrong_answers():
    truth = 0.1 * 0.5 / LOSSES["total"]
    assert ex.check_cos_share(0.1 * LOSSES["cos"] / LOSSES["total"], LOSSES, 0.1)
    assert ex.check_cos_share(round(truth, 6), LOSSES, 0.1)
    percent = ex.check_cos_share(100 * truth, LOSSES, 0.1)
    assert not percent and "percentage" in percent.message
    unweighted = ex.check_cos_share(LOSSES["cos"] / LOSSES["total"], LOSSES, 0.1)
    assert not unweighted and "lambda_cos" in unweighted.message
    assert not ex.check_cos_share(0.5, LOSSES, 0.1)
    assert not ex.check_cos_share("a lot", LOSSES, 0.1)
    # a run without the cosine term: its share is 0
    assert ex.check_cos_share(0.0, {"seg_s": 1.0, "total": 1.0}, 0.1)


def test_fcn_thresholds_reference_and_wrong_answers():
    assert ex.check_fcn_thresholds((0.4, 0.5, 0.6), 0.4)
    assert ex.check_fcn_thresholds([0.2, 0.3, 0.4], 0.2)
    reversed_order = ex.check_fcn_thresholds((0.6, 0.5, 0.4), 0.4)
    assert not reversed_order and "order" in reversed_order.message
    assert not ex.check_fcn_thresholds((0.4, 0.4, 0.4), 0.4)
    assert not ex.check_fcn_thresholds((0.4, 0.5), 0.4)
    assert not ex.check_fcn_thresholds(0.4, 0.4)


@pytest.mark.parametrize("check, args", [
    (ex.check_terms, ("ours",)), (ex.check_cos_share, (LOSSES, 0.1)), (ex.check_fcn_thresholds, (0.4,))])
@pytest.mark.parametrize("empty", [None, ...])
def test_no_answer_is_not_yet(check, args, empty):
    result = check(empty, *args)
    assert not result and "no answer yet" in result.message
