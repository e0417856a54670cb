"""The executors and the runner's command line, with jobs that only sleep or count: a queue of
free GPUs (simulated through CUDA_VISIBLE_DEVICES), submitit's requeue of a preempted job,
failed jobs reported with their log's last lines and their dependents skipped, Ctrl-C, Slurm
options, every `--set` error before any folder exists, and `cosuda.train --resume auto`."""
import json
import os
import signal
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import TINY_SETS
from cosuda import cluster, executors, runner
from cosuda.jobs import Job


@dataclass
class ScriptJob(Job):
    """A planned job whose command is a Python snippet (the executors run any job's command)."""
    code: str = ""
    argv: tuple = ()

    def command(self):
        return [sys.executable, "-c", textwrap.dedent(self.code), *map(str, self.argv)]


def _python_job(name, code, *args, out, after=()):
    return ScriptJob(name, [], Path(out), tuple(after), code=code, argv=args)



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
    assert executors.visible_gpus() == ["3", "5"] and executors.visible_gpus(1) == ["3"]
    durations = [3.0, 0.3, 0.3, 0.3]
    jobs = [_python_job(f"job{i}", SLEEPER, tmp_path / f"job{i}.json", d, out=tmp_path / "out" / f"job{i}")
            for i, d in enumerate(durations)]
    results = executors.run(jobs, "gpus", status_every=1000)
    assert [r.ok for r in results.values()] == [True] * 4 and list(results) == [j.name for j in jobs]
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
    jobs = [_python_job(f"job{i}", SLEEPER, tmp_path / f"job{i}.json", d, out=tmp_path / "out" / f"job{i}")
            for i, d in enumerate([1.5, 0.2, 0.2])]
    for job in jobs:
        job.nproc_per_node = 2
    assert all(r.ok for r in executors.run(jobs, "gpus", status_every=1000).values())
    rec = [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(3)]
    sets = [set(r["gpu"].split(",")) for r in rec]
    assert all(len(g) == 2 for g in sets) and not sets[0] & sets[1] and sets[2] == sets[1]
    with pytest.raises(RuntimeError, match="2 GPUs per job, 1 visible"):
        executors.run(jobs, "gpus", gpus=["0"])


def test_gpus_executor_refuses_what_is_not_there(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(RuntimeError, match="no GPU visible"):
        executors.run([_python_job("a", "pass", out=tmp_path / "a")], "gpus")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(RuntimeError, match="2 GPUs asked for, 1 visible"):
        executors.visible_gpus(2)
    assert executors.visible_gpus(["1", 7]) == ["1", "7"]


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
(d / "metrics.json").write_text(json.dumps({"miou19": float(sys.argv[2]), "seed": 0, "iteration": 1,
                                            "finished": True}))
"""


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_failed_job_is_reported_with_its_logs_tail_its_dependents_skipped_and_the_others_finish(
        tmp_path, capsys, parallel):
    out = tmp_path / "out"
    jobs = [_python_job("good0", GOOD, out / "good0", 7, out=out / "good0"),
            _python_job("bad", FAILING, out=out / "bad"),
            _python_job("needs-bad", GOOD, out / "x", 1, out=out / "x", after=["bad"]),
            _python_job("good1", GOOD, out / "good1", 9, out=out / "good1", after=["good0"])]
    results = executors.run(jobs, "local", parallel, status_every=1000)
    assert [r.ok for r in results.values()] == [True, False, False, True]
    assert [results[n].metrics["miou19"] for n in ("good0", "good1")] == [7.0, 9.0]
    bad = results["bad"]
    assert "exit status 3" in bad.error and "ValueError: boom" in bad.error
    assert bad.log == out / "bad" / "log.txt"
    tail = bad.log_tail.splitlines()
    assert len(tail) == executors.LOG_TAIL_LINES and tail[-1] == "ValueError: boom" and "line 29" in tail
    assert "line 5" not in tail
    assert results["needs-bad"].skipped and not (out / "x").exists()
    captured = capsys.readouterr()
    assert "FAILED bad" in captured.err and "line 29" in captured.err and "2 of 4 jobs failed" in captured.err
    assert "skipped needs-bad: bad failed" in captured.out
    # run again: what is done is not run again
    again = executors.run(jobs[:1], "local", parallel)
    assert again["good0"].skipped and again["good0"].ok


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
    job = _python_job("counter", COUNTER, state, steps, out / "counter", out=out / "counter")
    submitter = cluster.SlurmSubmitter("submitit-local", {"timeout_min": 10}, out)
    handle = submitter.submit(job.name, executors.run_child, (job.command(), job.out / "log.txt", None))
    starts = Path(str(state) + ".starts")
    deadline = time.time() + 120
    while not (state.is_file() and json.loads(state.read_text())["step"] >= 3):
        assert time.time() < deadline, "the job did not start"
        assert handle.state not in ("FAILED", "DONE", "COMPLETED"), handle.stderr()
        time.sleep(0.1)
    first = json.loads(starts.read_text().splitlines()[0])
    os.kill(first["job_pid"], signal.SIGUSR2)  # preemption
    assert handle.result() == 0, handle.stderr()
    attempts = [json.loads(line) for line in starts.read_text().splitlines()]
    assert len(attempts) == 2 and attempts[0]["step"] == 0 and 3 <= attempts[1]["step"] < steps
    assert json.loads(state.read_text())["step"] == steps
    log = (out / "counter" / "log.txt").read_text()
    assert "checkpoint written" in log and log.count("[runner]") == 2  # one header per attempt
    assert "requeued" in handle.stdout()


def test_jobs_run_through_the_submitit_executor_in_order(tmp_path):
    pytest.importorskip("submitit")
    out = tmp_path / "out"
    jobs = [_python_job("a", GOOD, out / "a", 3, out=out / "a"),
            _python_job("b", GOOD, out / "b", 4, out=out / "b", after=["a"]),
            _python_job("c", FAILING, out=out / "c")]
    results = executors.run(jobs, "submitit-local", slurm={"timeout_min": 5}, status_every=1000)
    assert results["a"].ok and results["b"].metrics["miou19"] == 4.0 and not results["c"].ok
    assert "exit status 3" in results["c"].error


def test_slurm_options():
    pytest.importorskip("submitit")
    opts = cluster.parse_slurm_options(["partition=gpu", "account=proj1", "time=1-12:00:00", "gpus_per_node=4",
                                        "cpus-per-task=32", "mem_gb=200", "qos=high", "max_num_timeout=5",
                                        "slurm_constraint=h100", "signal_delay_s=300"])
    assert opts == {"slurm_partition": "gpu", "slurm_account": "proj1", "timeout_min": 2160, "gpus_per_node": 4,
                    "cpus_per_task": 32, "mem_gb": 200, "slurm_qos": "high", "max_num_timeout": 5,
                    "slurm_constraint": "h100", "slurm_signal_delay_s": 300}
    assert [cluster.parse_time_minutes(t) for t in ("90", "48:00:00", "2-00", "10:30", "0:00:30")] == \
        [90, 2880, 2880, 11, 1]
    with pytest.raises(ValueError, match="KEY=VALUE, got 'partition'"):
        cluster.parse_slurm_options(["partition"])
    with pytest.raises(ValueError, match="unknown key 'partitoin'.*partition"):
        cluster.parse_slurm_options(["partitoin=gpu"])
    with pytest.raises(ValueError, match="no Slurm time"):
        cluster.parse_slurm_options(["time=tomorrow"])


def test_slurm_submission_file(tmp_path, monkeypatch):
    """What a Slurm submission hands to sbatch (a stand-in here): the options, the requeue signal
    ahead of the time limit, one job name per run."""
    pytest.importorskip("submitit")
    from cosuda import jobs

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'Submitted batch job 4242'\n")
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    opts = cluster.parse_slurm_options(["partition=gpu", "account=proj1", "time=48:00:00", "gpus_per_node=2"])
    [job] = jobs.plan(tmp_path / "runs", variants=["ours11"], seeds=[0], preset_prefix="gta5-deeplabv2",
                      pseudo_from="source-only", evaluations=None, nproc_per_node=2)
    handle = cluster.SlurmSubmitter("slurm", opts, tmp_path).submit(job.name, executors.run_child,
                                                                    (job.command(), job.out / "log.txt", None))
    assert handle.job_id == "4242"
    script = (tmp_path / "submitit" / "4242" / "4242_submission.sh").read_text()
    for line in ("--partition=gpu", "--account=proj1", "--time=2880", "--gpus-per-node=2", "--cpus-per-task=16",
                 "--job-name=cosuda-runs-gta5-deeplabv2-ours11-seed0",
                 f"--signal=USR2@{cluster.SLURM_DEFAULTS['slurm_signal_delay_s']}"):
        assert f"#SBATCH {line}\n" in script, line
    command = " ".join(job.command())
    assert f"--out {tmp_path / 'runs' / 'gta5-deeplabv2' / 'ours11' / 'seed0'} " in command
    assert command.endswith("--resume auto")
    assert "--nproc_per_node=2 -m cosuda.train" in " ".join(job.command())


@pytest.mark.parametrize("argv, needle", [
    (["grid", "--set", "t_coss=0.5"], "unknown configuration key 't_coss'"),
    (["grid", "--set", "t_cos=2"], "t_cos is a cosine similarity threshold"),
    (["grid", "--set", "lr=-1"], "lr must be 0 or more"),
    (["grid", "--set", "iterations=many"], "iterations=many: expected a value of type int"),
    (["grid", "--set", "t_cos"], "--set expects KEY=VALUE"),
    (["grid", "--sweep", "t_cos=0.5,x"], "t_cos=x: expected a value of type float"),
    (["grid", "--variants", "ours"], "add ours11 to --variants"),
    (["grid", "--executor", "slurm", "--slurm", "partitoin=gpu"], "unknown key 'partitoin'"),
    (["grid", "--preset-prefix", "gta5-deeplabv2", "--set", "dict_size=0"], "dict_size must be positive"),
])
def test_every_runner_error_is_one_line_before_any_folder_exists(tmp_path, capsys, argv, needle):
    if "--slurm" in argv:
        pytest.importorskip("submitit")
    out = tmp_path / "grid"
    assert runner.main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not out.exists()


def test_a_new_cosuda_home_is_made_not_a_traceback(tiny_benchmark, tmp_path):
    """`COSUDA_HOME=/a/new/folder python -m cosuda.runner grid ...`: the default runs folder is
    created under it and the grid runs (it once died in subprocess with FileNotFoundError)."""
    import subprocess

    home = tmp_path / "a" / "new" / "folder"
    proc = subprocess.run([sys.executable, "-m", "cosuda.runner", "grid", "--variants", "source-only", "--seeds", "0",
                           "--pseudo-from", "source-only", "--source-iterations", "1", "--iterations", "1",
                           "--evaluations", "1", "--data-root", str(tiny_benchmark), *TINY_SETS, "--parallel", "1"],
                          env=executors.child_env({"COSUDA_HOME": str(home), "OMP_NUM_THREADS": "1"}),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    done = home / "runs" / "grid" / "gta5" / "source-only" / "seed0" / "metrics.json"
    assert json.loads(done.read_text())["finished"]
    assert (home / "runs" / "grid" / "gta5" / "results.md").is_file()


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
        # A resume keeps the run's settings: a longer run is a change said out loud (issue 21).
        assert engine.main(common + ["--set", "iterations=4", "--resume", "auto"]) == 2
        assert "iterations 2 (run) vs 4 (given)" in capsys.readouterr().err
        assert engine.main(common + ["--set", "iterations=2", "--override", "iterations=4", "--resume", "auto"]) == 0
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

    for main, argv in ((engine.main, []), (runner.main, []), (runner.main, ["main"]), (runner.main, ["grid"]),
                       (runner.main, ["table"])):
        with pytest.raises(SystemExit):
            main(argv + ["--help"])
        text = capsys.readouterr().out
        assert "usage:" in text
        if argv or main is engine.main:
            assert "(default:" in text, argv
    with pytest.raises(SystemExit):
        runner.main(["grid", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--parallel PARALLEL --executor local: runs at a time (each gets cores / parallel threads) (default: 2)" in text


TRAP = """
import signal, sys, time, pathlib
signal.signal(signal.SIGTERM, lambda *a: (pathlib.Path(sys.argv[1]).write_text("checkpoint"), sys.exit(130)))
pathlib.Path(sys.argv[1] + ".started").write_text("")
time.sleep(60)
"""


def test_ctrl_c_stops_running_jobs_so_they_checkpoint_and_starts_no_other(tmp_path):
    """Ctrl-C in the runner (several jobs at once): each running job gets one SIGTERM (the
    training's signal to checkpoint and stop), the queued ones never start."""
    import subprocess

    script = tmp_path / "grid.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_runner_executors import TRAP, _python_job
        from cosuda import executors
        root = Path(sys.argv[1])
        jobs = [_python_job(f"job{{i}}", TRAP, root / f"job{{i}}", out=root / "out" / f"job{{i}}") for i in range(4)]
        executors.run(jobs, "local", parallel=2)
    """))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=executors.child_env(None),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while not all((tmp_path / f"job{i}.started").exists() for i in (0, 1)):
        assert time.time() < deadline and proc.poll() is None, proc.stdout.read() if proc.poll() is not None else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0 and "KeyboardInterrupt" in output and "run the same command again" in output
    assert [(tmp_path / f"job{i}").read_text() for i in (0, 1)] == ["checkpoint", "checkpoint"]
    assert not any((tmp_path / f"job{i}.started").exists() for i in (2, 3))


def test_the_inline_executor_is_the_notebooks_live_grid(tiny_benchmark, tmp_path):
    """What notebooks 08-10 run with live=True: the grid's plan, run in this process, read back by
    results.load; run again, every finished run is reused."""
    import torch

    from cosuda import jobs, results

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        values = dict(s.split("=", 1) for s in TINY_SETS[1::2])
        plan = jobs.plan(tmp_path / "live", "gta5", ["source-only", "ours"], [0], source_iterations=2, iterations=2,
                         pseudo_from="source-only", sets=values, data_root=str(tiny_benchmark), evaluations=1)
        first = executors.run(plan, "inline")
        assert all(r.ok and not r.skipped for r in first.values()), {n: r.error for n, r in first.items()}
        runs = results.load(tmp_path / "live", "gta5")
        assert sorted(runs) == ["ours", "source-only"] and runs["ours"][0]["config"]["pseudo_root"]
        again = executors.run(plan, "inline")
        assert all(r.skipped for r in again.values())
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow  # several training processes: ~45 s on 2 busy cores
def test_grid_with_training_jobs_on_two_simulated_gpus(tiny_benchmark, tmp_path, monkeypatch, capsys):
    """`runner grid` for real on the tiny benchmark, through the gpus executor (two simulated
    GPUs; the processes find no CUDA and train on the CPU): stage 1, pseudo-labels by
    `cosuda.train --pseudo-labels-from`, two variants, the results table."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "grid"
    code = runner.main(["grid", "--out", str(out), "--variants", "source-only", "ours11", "--seeds", "0",
                        "--source-iterations", "2", "--iterations", "2", "--evaluations", "1",
                        "--pseudo-from", "source-only", "--data-root", str(tiny_benchmark), *TINY_SETS,
                        "--executor", "gpus"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    for name in ("source-only", "ours11"):
        metrics = json.loads((out / "gta5" / name / "seed0" / "metrics.json").read_text())
        assert metrics["iteration"] == 2 and metrics["finished"]
        assert "--resume auto: no checkpoint" in (out / "gta5" / name / "seed0" / "log.txt").read_text()
    table = (out / "gta5" / "results.md").read_text()
    assert "| ours11 | 0 |" in table and "| source-only | 0 |" in table and "± 0.00" not in table
    assert "on GPU" in captured.out
