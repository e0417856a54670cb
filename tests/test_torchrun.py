"""cosuda.executors.torchrun: one run on several processes, started from Python."""
import pytest

from cosuda.executors import torchrun


def test_torchrun_reports_a_failed_run_with_its_log(tmp_path):
    """A run that fails inside torchrun raises, naming the log and showing its last lines (the
    successful path runs in notebooks/12_scale_out, executed by the test command)."""
    with pytest.raises(RuntimeError, match="unknown preset") as err:
        torchrun("synthetic-no-such-variant", tmp_path / "run", nproc_per_node=1, progress=False)
    assert "torchrun.log" in str(err.value)
    assert (tmp_path / "run" / "torchrun.log").read_text().count("unknown preset") >= 1
