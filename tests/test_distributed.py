"""One run on several processes (gloo on CPU, as NCCL would on GPUs): a shared dictionary,
sharded evaluation equal to the single-process one, and checkpoints that resume on any
number of processes."""
import json
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp

from conftest import TINY_SETS

REPO = Path(__file__).resolve().parent.parent


def _init(rank, world, init_file):
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)


def _dictionary_worker(rank, world, init_file, out):
    from cosuda.config import VARIANTS
    from cosuda.models import build_model
    from cosuda.uda import UDAStep

    _init(rank, world, init_file)
    torch.manual_seed(0)  # the same initial model on every rank, as DDP requires
    model = build_model("deeplabv2", "resnet18", weights="random", norm="group")
    net = torch.nn.parallel.DistributedDataParallel(model)
    net.upsample = model.upsample
    opt = torch.optim.SGD(model.param_groups(1e-3), lr=1e-3)
    step = UDAStep(net, opt, VARIANTS["ours11"], num_classes=19, t_cos=0.0, lambda_cos=0.1,
                   dict_size=25, feature_dims=[512])
    g = torch.Generator().manual_seed(100 + rank)  # every rank sees different images
    for _ in range(3):
        x = torch.rand(1, 3, 32, 48, generator=g)
        with torch.no_grad():  # labels that the model gets partly right, so process A keeps vectors
            label = model.upsample(model(x)[1], (32, 48)).argmax(1)
        label[:, :16] = torch.randint(0, 19, (1, 16, 48), generator=g)
        step({"image": x, "label": label}, {"image": torch.rand(1, 3, 32, 48, generator=g)})
    torch.save({"dictionary": step.dictionaries[0].state_dict(),
                "params": [p.detach().clone() for p in model.parameters()]}, Path(out) / f"rank{rank}.pt")
    tdist.destroy_process_group()


def test_every_rank_holds_the_same_dictionary(tmp_path):
    mp.spawn(_dictionary_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    d0, d1 = r0["dictionary"], r1["dictionary"]
    assert d0.keys() == d1.keys()
    for key in d0:
        if torch.is_tensor(d0[key]):
            assert torch.equal(d0[key], d1[key]), key
    totals = next(v for k, v in d0.items() if torch.is_tensor(v) and v.dtype == torch.int64 and v.dim() == 1)
    assert totals.sum() > 0, "process A kept nothing: the test would prove nothing"
    for p0, p1 in zip(r0["params"], r1["params"]):  # DDP kept the replicas identical
        assert torch.equal(p0, p1)


def _eval_worker(rank, world, init_file, out, root):
    from cosuda.data import Cityscapes
    from cosuda.models import build_model
    from cosuda.train import evaluate_run

    _init(rank, world, init_file)
    torch.manual_seed(0)
    model = build_model("deeplabv2", "resnet18", weights="random", norm="group").eval()
    val = Cityscapes(Path(root) / "cityscapes", "val", size=(32, 16), label_size="original")
    result = evaluate_run(model, val, torch.device("cpu"), nullcontext, progress=False)
    if rank == 0:
        torch.save(torch.as_tensor(result["confusion"]), Path(out) / "conf2.pt")
    tdist.destroy_process_group()


def test_two_process_evaluation_equals_one_process(tmp_path, tiny_benchmark):
    from cosuda.data import Cityscapes
    from cosuda.models import build_model
    from cosuda.train import evaluate_run

    mp.spawn(_eval_worker, args=(2, str(tmp_path / "init"), str(tmp_path), str(tiny_benchmark)), nprocs=2)
    torch.manual_seed(0)
    model = build_model("deeplabv2", "resnet18", weights="random", norm="group").eval()
    val = Cityscapes(tiny_benchmark / "cityscapes", "val", size=(32, 16), label_size="original")
    single = evaluate_run(model, val, torch.device("cpu"), nullcontext, progress=False)
    conf2 = torch.load(tmp_path / "conf2.pt")
    assert conf2.sum() > 0
    assert torch.equal(conf2, torch.as_tensor(single["confusion"]))


def _cli(args, nproc=1, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    if nproc == 1:
        cmd = [sys.executable, "-m", "cosuda.train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "cosuda.train", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def test_two_process_run_resumes_with_one_process(tmp_path, tiny_benchmark):
    run = tmp_path / "run"
    common = ["--preset", "synthetic-ours11", "--out", str(run), "--set", f"data_root={tiny_benchmark}",
              "--set", "eval_every=2", "--set", "checkpoint_every=2", *TINY_SETS]
    first = _cli(common + ["--set", "iterations=2"], nproc=2)
    assert first.returncode == 0, first.stderr[-3000:]
    state = torch.load(run / "checkpoints" / "iter_0000002.pt", weights_only=False)
    assert state["world_size"] == 2 and state["iteration"] == 2
    second = _cli(common + ["--resume", "--override", "iterations=4"], nproc=1)  # a longer run: said so
    assert second.returncode == 0, second.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["iteration"] == 4 and metrics["world_size"] == 1
    assert [h["iteration"] for h in metrics["history"]] == [2, 4]


def _captured_worker(rank, world, init_file, out):
    from cosuda.config import VARIANTS
    from cosuda.uda import UDAStep
    from test_capture import _batches, _bf16, _TinySegmenter

    _init(rank, world, init_file)
    results = {}
    for mode in ("off", "step"):
        torch.manual_seed(0)
        model = _TinySegmenter()
        net = torch.nn.parallel.DistributedDataParallel(model)
        net.upsample = model.upsample
        step = UDAStep(net, torch.optim.SGD(model.parameters(), lr=0.05), VARIANTS["ours"], num_classes=19,
                       t_cos=0.0, lambda_cos=1.0, dict_size=12, feature_dims=[16], autocast=_bf16,
                       dict_dtype="bfloat16", compile=mode, compile_options={"backend": "aot_eager"})
        batches = list(_batches(3 + rank))[rank:]  # every rank sees different images
        results[mode] = {"logs": [step(s, t) for s, t in batches],
                         "dictionary": step.dictionaries[0].state_dict()}
    from torch._dynamo.utils import counters

    results["graph_breaks"] = list(counters["graph_break"])
    torch.save(results, Path(out) / f"captured{rank}.pt")
    tdist.destroy_process_group()


@pytest.mark.skipif(not hasattr(torch, "_grouped_mm"), reason="torch._grouped_mm missing")
def test_a_captured_step_under_ddp_matches_the_eager_one(tmp_path):
    """compile="step" with two gloo processes: the static all-gather of process A's rows inside
    the compiled step fills the same dictionary, and the losses match the eager steps. The graph
    breaks only where DDP's own forward cannot be traced (not in processes A/B, the gather, the
    enqueue or the loss), so everything of ours between them is captured."""
    torch._dynamo.reset()
    mp.spawn(_captured_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"captured{r}.pt", weights_only=False) for r in (0, 1)]
    for r in ranks:
        for e, c in zip(r["off"]["logs"], r["step"]["logs"]):
            for key in e:
                assert c[key] == pytest.approx(e[key], rel=2e-2, abs=2e-3), key
        assert torch.equal(r["off"]["dictionary"]["buffer"], r["step"]["dictionary"]["buffer"])
        assert torch.equal(r["off"]["dictionary"]["total"], r["step"]["dictionary"]["total"])
    assert torch.equal(ranks[0]["step"]["dictionary"]["buffer"], ranks[1]["step"]["dictionary"]["buffer"])
    for r in ranks:
        for reason in r["graph_breaks"]:
            assert "DistributedDataParallel" in reason or "Logger" in reason, reason
    assert int(ranks[0]["step"]["dictionary"]["total"].sum()) > 0


# --- DDP hygiene: each process on its own device, the group left at the end -----------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env_worker(rank, world, ports, out, root):
    """Joins the group the way torchrun's processes do (environment variables), then trains."""
    from cosuda import distributed as dist
    from cosuda import train as engine
    from cosuda.config import make_config

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[0]))
    report = {"created": dist.init_from_env("cpu"), "rank": dist.rank(), "world": dist.world_size(),
              "backend": tdist.get_backend(), "again": dist.init_from_env("cpu")}
    report["sum"] = float(dist.all_reduce_sum(torch.tensor([rank + 1.0])))
    dist.destroy()
    report["after_destroy"] = tdist.is_initialized()
    os.environ["MASTER_PORT"] = str(ports[1])  # a fresh store for the run's own group
    cfg = make_config("synthetic-ours11", {"data_root": str(root), "source_size": (32, 18), "target_size": (32, 16),
                                          "eval_size": (32, 16), "dict_size": 20, "num_workers": 0,
                                          "progress": False, "iterations": 2, "eval_every": 2,
                                          "checkpoint_every": 2})
    metrics = engine.train(cfg, Path(out) / "run")
    report["run_world"] = metrics["world_size"]
    report["after_run"] = tdist.is_initialized()  # train() left the group it had joined
    torch.save(report, Path(out) / f"env{rank}.pt")


def test_processes_join_from_the_environment_and_leave_the_group_after_a_run(tmp_path, tiny_benchmark):
    mp.spawn(_env_worker, args=(2, (_free_port(), _free_port()), str(tmp_path), str(tiny_benchmark)), nprocs=2)
    for rank in (0, 1):
        r = torch.load(tmp_path / f"env{rank}.pt")
        assert r["created"] and not r["again"] and r["rank"] == rank and r["world"] == 2
        assert r["backend"] == "gloo" and r["sum"] == 3.0
        assert not r["after_destroy"] and r["run_world"] == 2 and not r["after_run"]
    state = torch.load(tmp_path / "run" / "checkpoints" / "iter_0000002.pt", weights_only=False)
    assert state["world_size"] == 2 and "cuda" not in state["rng"]  # a CPU run saves no GPU generator


class _Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, name, result=None):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return result
        return record


def _forbid(name):
    def fail(*args, **kwargs):
        raise AssertionError(f"{name} touches other GPUs than the process's own")
    return fail


def test_cuda_processes_bind_their_own_gpu(monkeypatch):
    """On CUDA (simulated): the process makes cuda:LOCAL_RANK current before it joins the NCCL
    group, binds the group to it (device_id), and a single process sets its device too."""
    from cosuda import distributed as dist

    rec = _Recorder()
    monkeypatch.setattr(torch.cuda, "set_device", rec("set_device"))
    monkeypatch.setattr(tdist, "init_process_group", rec("init_process_group"))
    monkeypatch.setattr(tdist, "is_initialized", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert dist.init_from_env("cuda") is True  # no index: LOCAL_RANK's GPU
    assert rec.calls == [("set_device", (torch.device("cuda", 3),), {}),
                         ("init_process_group", (), {"backend": "nccl", "device_id": torch.device("cuda", 3)})]
    rec.calls.clear()
    assert dist.init_from_env(torch.device("cuda", 1)) is True
    assert rec.calls[0] == ("set_device", (torch.device("cuda", 1),), {})
    assert rec.calls[1][2]["device_id"] == torch.device("cuda", 1)
    rec.calls.clear()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert dist.init_from_env("cuda:0") is False and [c[0] for c in rec.calls] == ["set_device"]
    rec.calls.clear()
    assert dist.init_from_env("cpu") is False and rec.calls == []


def test_device_precision_and_rng_touch_only_the_process_gpu(monkeypatch):
    """resolve_device gives cuda:LOCAL_RANK for "auto"/"cuda"; bf16 support and the GPU RNG state
    are asked of that device only (never torch.cuda.is_bf16_supported, which asks the current
    device, nor get/set_rng_state_all, which touch every GPU), and the saved GPU generator is
    restored on whatever device resumes, from checkpoints of this version or older ones."""
    from types import SimpleNamespace

    from cosuda import train as engine
    from cosuda.config import make_config

    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert engine.resolve_device(make_config("synthetic-ours")) == torch.device("cuda", 2)
    assert engine.resolve_device(make_config("synthetic-ours", {"device": "cuda"})) == torch.device("cuda", 2)
    assert engine.resolve_device(make_config("synthetic-ours", {"device": "cuda:0"})) == torch.device("cuda", 0)
    assert engine.resolve_device(make_config("synthetic-ours", {"device": "cpu"})) == torch.device("cpu")

    asked = []
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", _forbid("is_bf16_supported"))
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda d: asked.append(torch.device(d)) or SimpleNamespace(major=8))
    monkeypatch.setattr(torch.version, "hip", None)
    assert engine.resolve_precision(make_config("synthetic-ours"), torch.device("cuda", 2)) == "bf16"
    assert asked == [torch.device("cuda", 2)]
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(major=7))
    assert engine.resolve_precision(make_config("synthetic-ours"), torch.device("cuda", 2)) == "fp32"

    rec = _Recorder()
    gpu_state = torch.arange(16, dtype=torch.uint8)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", _forbid("get_rng_state_all"))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", _forbid("set_rng_state_all"))
    monkeypatch.setattr(torch.cuda, "get_rng_state", rec("get", gpu_state))
    monkeypatch.setattr(torch.cuda, "set_rng_state", rec("set"))
    state = engine._rng_state(torch.device("cuda", 2))
    assert rec.calls == [("get", (torch.device("cuda", 2),), {})] and torch.equal(state["cuda"], gpu_state)
    rec.calls.clear()
    engine._set_rng_state(state, torch.device("cuda", 0))  # resumed by another rank / process count
    assert len(rec.calls) == 1 and torch.equal(rec.calls[0][1][0], gpu_state)
    assert rec.calls[0][1][1] == torch.device("cuda", 0)
    rec.calls.clear()
    old = dict(state, cuda=[torch.zeros(4, dtype=torch.uint8), torch.ones(4, dtype=torch.uint8)])
    engine._set_rng_state(old, torch.device("cuda", 1))  # an older checkpoint: every GPU's generator
    assert torch.equal(rec.calls[0][1][0], torch.ones(4, dtype=torch.uint8))
    rec.calls.clear()
    engine._set_rng_state(old, torch.device("cuda", 5))
    assert torch.equal(rec.calls[0][1][0], torch.zeros(4, dtype=torch.uint8))
    rec.calls.clear()
    engine._set_rng_state(state, torch.device("cpu"))  # a CPU run ignores a GPU generator
    assert rec.calls == [] and "cuda" not in engine._rng_state(torch.device("cpu"))
