"""The batch runner's executors, with jobs that only sleep or count: a queue of free GPUs
(simulated through CUDA_VISIBLE_DEVICES), submitit's requeue of a preempted Checkpointable job,
failed jobs reported with their log's last lines, Slurm options, the reproduce pipeline's
wiring, and `cosuda.train --resume auto` on a tiny run."""
import json
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import TINY_SETS
from cosuda import runner


def _python_job(name, code, *args, run_dir=None):
    return runner.Job(name, command=[sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                      run_dir=str(run_dir) if run_dir else None)


SLEEPER = """
import json, os, sys, time
start = time.time()
time.sleep(float(sys.argv[2]))
with open(sys.argv[1], "w") as f:
    json.dump({"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}, f)
"""


def test_the_next_job_starts_on_the_gpu_that_finished(tmp_path, monkeypatch):
    """2 simulated GPUs, 4 jobs: the first is long, so the second GPU runs jobs 2, 3 and 4 one
    after the other (job index modulo 2 would have queued job 3 behind the long job)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert runner.visible_gpus() == ["3", "5"] and runner.visible_gpus(1) == ["3"]
    durations = [3.0, 0.3, 0.3, 0.3]
    jobs = [_python_job(f"job{i}", SLEEPER, tmp_path / f"job{i}.json", d) for i, d in enumerate(durations)]
    results = runner.run_jobs(jobs, tmp_path / "out", executor="gpus")
    assert [r.ok for r in results] == [True] * 4 and [r.name for r in results] == [j.name for j in jobs]
    rec = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(4)]
    long_gpu, short_gpu = rec[0]["gpu"], rec[1]["gpu"]
    assert {long_gpu, short_gpu} == {"3", "5"}
    assert rec[2]["gpu"] == short_gpu and rec[3]["gpu"] == short_gpu  # the GPU that finished first
    assert rec[2]["start"] >= rec[1]["end"] - 0.05 and rec[3]["start"] >= rec[2]["end"] - 0.05
    assert rec[3]["end"] < rec[0]["end"]  # all of them while the long job still ran
    for gpu in ("3", "5"):  # never two jobs on one GPU at once
        spans = sorted((r["start"], r["end"]) for r in rec if r["gpu"] == gpu)
        assert all(a[1] <= b[0] + 0.05 for a, b in zip(spans, spans[1:]))
    assert "job0" in (tmp_path / "out" / "job0" / "log.txt").read_text()  # the command, logged


def test_torchrun_jobs_take_several_gpus_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    jobs = [_python_job(f"job{i}", SLEEPER, tmp_path / f"job{i}.json", d) for i, d in enumerate([1.5, 0.2, 0.2])]
    assert all(r.ok for r in runner.run_jobs(jobs, tmp_path / "out", executor="gpus", gpus_per_job=2))
    rec = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(3)]
    sets = [set(r["gpu"].split(",")) for r in rec]
    assert all(len(g) == 2 for g in sets) and not sets[0] & sets[1] and sets[2] == sets[1]
    with pytest.raises(RuntimeError, match="3 GPUs per job, 2 visible"):
        runner.run_jobs(jobs, tmp_path, executor="gpus", gpus=["0", "1"], gpus_per_job=3)


def test_gpus_executor_refuses_what_is_not_there(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(RuntimeError, match="no GPU visible"):
        runner.run_jobs([_python_job("a", "pass")], tmp_path, executor="gpus")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(RuntimeError, match="2 GPUs asked for, 1 visible"):
        runner.visible_gpus(2)
    assert runner.visible_gpus(["1", 7]) == ["1", "7"]


FAILING = """
import sys
for i in range(30):
    print(f"line {i}", flush=True)
print("ValueError: boom", file=sys.stderr, flush=True)
sys.exit(3)
"""
GOOD = """
import json, pathlib, sys
d = pathlib.Path(sys.argv[1]); d.mkdir(parents=True, exist_ok=True)
(d / "metrics.json").write_text(json.dumps({"miou19": float(sys.argv[2]), "seed": 0, "iteration": 1}))
"""


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_failed_job_is_reported_with_its_logs_tail_and_the_others_finish(tmp_path, capsys, parallel):
    out = tmp_path / "out"
    jobs = [_python_job("good-seed0", GOOD, out / "good-seed0", 7, run_dir=out / "good-seed0"),
            _python_job("bad-seed0", FAILING),
            _python_job("good-seed1", GOOD, out / "good-seed1", 9, run_dir=out / "good-seed1")]
    results = runner.run_jobs(jobs, out, parallel=parallel)
    assert [r.ok for r in results] == [True, False, True]
    assert [r.metrics["miou19"] for r in (results[0], results[2])] == [7.0, 9.0]
    bad = results[1]
    assert "exit status 3" in bad.error and "ValueError: boom" in bad.error
    assert bad.log == out / "bad-seed0" / "log.txt"
    tail = bad.log_tail.splitlines()
    assert len(tail) == runner.LOG_TAIL_LINES and tail[-1] == "ValueError: boom" and "line 29" in tail
    assert "line 5" not in tail
    err = capsys.readouterr().err
    assert "bad-seed0: FAILED" in err and "line 29" in err and "1 of 3 jobs failed" in err
    assert "| good |" in runner.results_table(out)


COUNTER = """
import json, os, signal, sys, time
state, steps, run_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
start = json.load(open(state))["step"] if os.path.exists(state) else 0
with open(state + ".starts", "a") as f:  # where each attempt began, and who started it
    f.write(json.dumps({"step": start, "job_pid": os.getppid()}) + "\\n")
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
for i in range(start, steps):
    time.sleep(0.1)
    with open(state + ".tmp", "w") as f:
        json.dump({"step": i + 1}, f)
    os.replace(state + ".tmp", state)
    if stop:
        print(f"stopped after step {i + 1}: checkpoint written", flush=True)
        sys.exit(130)
os.makedirs(run_dir, exist_ok=True)
with open(os.path.join(run_dir, "metrics.json"), "w") as f:
    json.dump({"miou19": 1.0, "iteration": steps, "finished": True}, f)
"""


def test_a_preempted_slurm_job_is_requeued_and_resumes(tmp_path):
    """submitit's local executor: USR2 to the job (what Slurm sends before preemption or the
    time limit) makes the Checkpointable job requeue itself; its command got a SIGTERM, saved
    its state, and the requeued job continues from there."""
    pytest.importorskip("submitit")
    out, state, steps = tmp_path / "out", tmp_path / "state.json", 40
    job = _python_job("counter", COUNTER, state, steps, out / "counter", run_dir=out / "counter")
    [(_, handle)] = runner.submit([job], out, "submitit-local", {"timeout_min": 10})
    starts = Path(str(state) + ".starts")
    deadline = time.time() + 120
    while not (state.is_file() and json.loads(state.read_text())["step"] >= 3):
        assert time.time() < deadline, "the job did not start"
        assert handle.state not in ("FAILED", "DONE", "COMPLETED"), handle.stderr()
        time.sleep(0.1)
    first = json.loads(starts.read_text().splitlines()[0])
    os.kill(first["job_pid"], signal.SIGUSR2)  # preemption
    [result] = runner.wait_submitit([(job, handle)], out)
    assert result.ok, (result.error, result.log_tail, handle.stderr())
    attempts = [json.loads(line) for line in starts.read_text().splitlines()]
    assert len(attempts) == 2 and attempts[0]["step"] == 0 and 3 <= attempts[1]["step"] < steps
    assert json.loads(state.read_text())["step"] == steps and result.metrics["iteration"] == steps
    log = (out / "counter" / "log.txt").read_text()
    assert "checkpoint written" in log and log.count("[runner]") == 2  # one header per attempt
    assert "requeued" in handle.stdout()


def test_slurm_options(tmp_path):
    pytest.importorskip("submitit")
    opts = runner.parse_slurm_options(["partition=gpu", "account=proj1", "time=1-12:00:00", "gpus_per_node=4",
                                       "cpus-per-task=32", "mem_gb=200", "qos=high", "max_num_timeout=5",
                                       "slurm_constraint=h100", "signal_delay_s=300"])
    assert opts == {"slurm_partition": "gpu", "slurm_account": "proj1", "timeout_min": 2160, "gpus_per_node": 4,
                    "cpus_per_task": 32, "mem_gb": 200, "slurm_qos": "high", "max_num_timeout": 5,
                    "slurm_constraint": "h100", "slurm_signal_delay_s": 300}
    assert [runner.parse_time_minutes(t) for t in ("90", "48:00:00", "2-00", "10:30", "0:00:30")] == \
        [90, 2880, 2880, 11, 1]
    with pytest.raises(ValueError, match="KEY=VALUE, got 'partition'"):
        runner.parse_slurm_options(["partition"])
    with pytest.raises(ValueError, match="unknown key 'partitoin'.*partition"):
        runner.parse_slurm_options(["partitoin=gpu"])
    with pytest.raises(ValueError, match="no Slurm time"):
        runner.parse_slurm_options(["time=tomorrow"])
    # from the command line: one line, exit status 2, before anything runs
    assert runner.main(["reproduce", "--out", str(tmp_path / "grid"), "--executor", "slurm",
                        "--slurm", "partitoin=gpu"]) == 2
    assert not (tmp_path / "grid").exists()


def test_slurm_submission_file(tmp_path, monkeypatch):
    """What submit() hands to sbatch (a stand-in here): the options, the requeue signal ahead of
    the time limit, one job name per run."""
    pytest.importorskip("submitit")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'Submitted batch job 4242'\n")
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    opts = runner.parse_slurm_options(["partition=gpu", "account=proj1", "time=48:00:00", "gpus_per_node=2"])
    job = runner.train_job("ours-seed0", "gta5-deeplabv2-ours", tmp_path / "ours-seed0", nproc_per_node=2)
    [(_, handle)] = runner.submit([job], tmp_path, "slurm", opts)
    assert handle.job_id == "4242"
    script = (tmp_path / "submitit" / "4242" / "4242_submission.sh").read_text()
    for line in ("--partition=gpu", "--account=proj1", "--time=2880", "--gpus-per-node=2", "--cpus-per-task=16",
                 "--job-name=cosuda-ours-seed0", f"--signal=USR2@{runner.SLURM_DEFAULTS['slurm_signal_delay_s']}"):
        assert f"#SBATCH {line}\n" in script, line
    assert " ".join(job.command).endswith("--nproc_per_node=2 -m cosuda.train --preset gta5-deeplabv2-ours "
                                          f"--out {tmp_path / 'ours-seed0'} --resume auto")


def test_reproduce_runs_its_preparation_through_the_executor(tmp_path, monkeypatch):
    """The source-only model and the pseudo-labels go through --executor too, one stage after the
    other, before the grid; eval_every reaches every notebook job; --engine train jobs run
    cosuda.train with --resume auto, under torchrun for several GPUs per run."""
    calls = []

    def fake_run_jobs(jobs, out_root, executor="local", gpus=None, slurm=None, parallel=1, gpus_per_job=1):
        calls.append({"names": [j.name for j in jobs], "jobs": jobs, "executor": executor, "slurm": slurm,
                      "out": Path(out_root), "gpus": gpus, "gpus_per_job": gpus_per_job})
        return [runner.JobResult(j.name, True, 0.0, Path(out_root) / j.name, None) for j in jobs]

    monkeypatch.setattr(runner, "run_jobs", fake_run_jobs)
    out = tmp_path / "grid"
    assert runner.main(["reproduce", "--out", str(out), "--variants", "source-only", "ours", "--seeds", "0", "1",
                        "--iterations", "10", "--eval-every", "5", "--executor", "gpus", "--gpus", "0", "1"]) == 0
    assert [c["names"] for c in calls] == [["pseudo-source-only"], ["pseudo-labels"],
                                           ["source-only-seed0", "ours-seed0", "source-only-seed1", "ours-seed1"]]
    assert all(c["executor"] == "gpus" and c["gpus"] == ["0", "1"] and c["gpus_per_job"] == 1 for c in calls)
    assert calls[0]["out"] == out / "_prep" and calls[2]["out"] == out
    assert calls[0]["jobs"][0].notebook == "02_source_only" and calls[0]["jobs"][0].parameters["eval_every"] == 5
    assert all(j.parameters["eval_every"] == 5 and j.parameters["iterations"] == 10 for j in calls[2]["jobs"])
    assert (out / "results.md").is_file()

    calls.clear()
    assert runner.main(["reproduce", "--out", str(out / "real"), "--preset-prefix", "gta5-deeplabv2",
                        "--data-root", str(tmp_path), "--variants", "ours", "--seeds", "0",  # engine: train
                        "--set", "eval_max_items=10", "--executor", "slurm",
                        "--slurm", "partition=gpu", "gpus_per_node=2"]) == 0
    source, pseudo, ours = (c["jobs"][0] for c in calls)
    assert all(c["executor"] == "slurm" and c["slurm"] == {"slurm_partition": "gpu", "gpus_per_node": 2}
               for c in calls)
    for job in (source, ours):  # torchrun with 2 processes, the preset's length and eval spacing
        cmd = " ".join(job.command)
        assert "torch.distributed.run" in cmd and "--nproc_per_node=2" in cmd and cmd.endswith("--resume auto")
        assert "--set iterations=120000" in cmd and "--set eval_every=2000" in cmd
        assert "--set eval_max_items=10" in cmd and f"--set data_root={tmp_path}" in cmd
    assert "--preset gta5-deeplabv2-source-only" in " ".join(source.command)
    assert f"--pseudo-labels-from {out / 'real' / '_prep' / 'pseudo-source-only'}" in " ".join(pseudo.command)
    assert f"--set pseudo_root={out / 'real' / 'pseudo_labels'}" in " ".join(ours.command)
    assert ours.run_path(out / "real") == out / "real" / "ours-seed0"


def test_train_resume_auto_both_ways(tiny_benchmark, tmp_path, capsys):
    """`--resume auto` starts a run where there is no checkpoint and continues one where there
    is; `--resume` still requires a checkpoint and no flag still refuses one."""
    import torch

    from cosuda import train as engine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path / "run"
        common = ["--preset", "synthetic-ours11", "--out", str(run), "--set", f"data_root={tiny_benchmark}",
                  "--set", "eval_every=2", "--set", "checkpoint_every=2", *TINY_SETS]
        assert engine.main(common + ["--set", "iterations=2", "--resume"]) == 2
        assert "no checkpoint" in capsys.readouterr().err and not (run / "checkpoints").exists()
        assert engine.main(common + ["--set", "iterations=2", "--resume", "auto"]) == 0
        assert "starting the run" in capsys.readouterr().err
        assert engine.main(common + ["--set", "iterations=4"]) == 2
        assert "already holds checkpoints" in capsys.readouterr().err
        assert engine.main(common + ["--set", "iterations=4", "--resume", "auto"]) == 0
        assert "resuming from" in capsys.readouterr().err
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["iteration"] == 4 and [h["iteration"] for h in metrics["history"]] == [2, 4]
        # a finished run, run again (a requeued job that had ended): nothing more to do
        assert engine.main(common + ["--set", "iterations=4", "--resume", "auto"]) == 0
        assert json.loads((run / "metrics.json").read_text())["history"] == metrics["history"]
        with pytest.raises(SystemExit):
            engine.main(common + ["--resume", "maybe"])
    finally:
        torch.set_num_threads(threads)


def test_every_command_lists_its_defaults(capsys):
    from cosuda import train as engine

    for main, argv in ((engine.main, []), (runner.main, []), (runner.main, ["reproduce"]),
                       (runner.main, ["main"]), (runner.main, ["grid"]), (runner.main, ["table"])):
        with pytest.raises(SystemExit):
            main(argv + ["--help"])
        text = capsys.readouterr().out
        assert "usage:" in text
        if argv or main is engine.main:
            assert "(default:" in text, argv
    with pytest.raises(SystemExit):
        runner.main(["reproduce", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--parallel PARALLEL --executor local: runs at a time (default: 1)" in text


def test_ctrl_c_stops_running_jobs_so_they_checkpoint_and_starts_no_other(tmp_path):
    """Ctrl-C in the runner (several jobs at once): each running job gets one SIGTERM (the
    training's signal to checkpoint and stop), the queued ones never start."""
    import subprocess

    script = tmp_path / "grid.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from cosuda import runner
        trap = '''
        import signal, sys, time, pathlib
        signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path(sys.argv[1]).write_text("checkpoint"), sys.exit(130)))
        pathlib.Path(sys.argv[1] + ".started").write_text("")
        time.sleep(60)
        '''
        jobs = [runner.Job(f"job{{i}}", command=[sys.executable, "-c", trap, str(Path(sys.argv[1]) / f"job{{i}}")])
                for i in range(4)]
        runner.run_jobs(jobs, Path(sys.argv[1]) / "out", parallel=2)
    """))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=runner._child_env(None),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while not all((tmp_path / f"job{i}.started").exists() for i in (0, 1)):
        assert time.time() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0 and "KeyboardInterrupt" in output
    assert [(tmp_path / f"job{i}").read_text() for i in (0, 1)] == ["checkpoint", "checkpoint"]
    assert not any((tmp_path / f"job{i}.started").exists() for i in (2, 3))


@pytest.mark.slow  # four training processes: ~45 s on 2 busy cores
def test_reproduce_with_training_jobs_end_to_end(tiny_benchmark, tmp_path, monkeypatch, capsys):
    """`reproduce --engine train` for real on the tiny benchmark, through the gpus executor (two
    simulated GPUs; the processes find no CUDA and train on the CPU): source-only model,
    pseudo-labels by `cosuda.train --pseudo-labels-from`, two variants, the results table.
    (ours11, not ours: after 2 source-only iterations one of the 6 target images has no pixel
    above its threshold, and a target cross-entropy over no pixel is NaN.)"""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "grid"
    sets = [a for pair in zip(TINY_SETS[::2], TINY_SETS[1::2]) for a in pair]
    code = runner.main(["reproduce", "--out", str(out), "--engine", "train", "--variants", "source-only", "ours11",
                        "--seeds", "0", "--iterations", "2", "--eval-every", "2", "--set", "checkpoint_every=2",
                        "--set", f"data_root={tiny_benchmark}", *sets, "--executor", "gpus"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    assert (out / "pseudo_labels" / "thresholds.json").is_file()
    for name in ("source-only-seed0", "ours11-seed0"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["iteration"] == 2 and metrics["finished"]
        assert "--resume auto: no checkpoint" in (out / name / "log.txt").read_text()
    table = (out / "results.md").read_text()
    assert "| ours11 | 0 |" in table and "| source-only | 0 |" in table and "± 0.00" not in table
    assert "starting on GPU" in captured.out
