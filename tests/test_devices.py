"""Issue 30 item 1: devices. `cuda:N` and `mps` wherever `cuda` is accepted, checked against what this machine has by
one function (ganlab/devices.py); a local parallel sweep on several GPUs puts job i on GPU i mod N; a run trained
on cuda:1 resumes on cuda:0 (its GPU's RNG stream along) or, with resume_force, on the CPU. There is no GPU here:
the CUDA queries are mocked (torch.cuda.is_available, device_count), and the job side's CUDA never starts."""

import io
import json
import re

import pytest
import torch
from conftest import TINY, TINY_RUN, make_cfg
from test_sweep_safety import in_process

from ganlab import checkpoint, devices
from ganlab.config import validate
from ganlab.errors import ConfigError
from ganlab.train import run


@pytest.fixture
def gpus(monkeypatch):
    """set(n): this process sees n CUDA GPUs (0: none); mps stays unavailable unless a test says otherwise."""
    def set_count(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return set_count


# --- one check of a device name ------------------------------------------------------------------------------

@pytest.mark.parametrize("count, name, expected", [
    (2, "cuda:1", torch.device("cuda", 1)),
    (2, "cuda:0", torch.device("cuda", 0)),
    (2, "cuda", torch.device("cuda")),
    (2, "auto", torch.device("cuda")),
    (0, "auto", torch.device("cpu")),
    (0, "cpu", torch.device("cpu")),
])
def test_present_devices_resolve(gpus, count, name, expected):
    gpus(count)
    assert devices.resolve_device(name) == expected


@pytest.mark.parametrize("count, name, option, message", [
    (0, "cuda:1", "device=", "device=cuda:1 but CUDA is not available here; use device=auto or device=cpu"),
    (2, "cuda:2", "device=", "device=cuda:2 but this machine has 2 GPUs (cuda:0 to cuda:1); use one of them, or device=auto"),
    (1, "cuda:1", "device=", "device=cuda:1 but this machine has 1 GPU (cuda:0); use one of them, or device=auto"),
    (4, "cuda:7", "--device ", "--device cuda:7 but this machine has 4 GPUs (cuda:0 to cuda:3); use one of them, or "
                               "--device auto"),
    (2, "mps", "device=", "device=mps but MPS (Apple's GPU) is not available here; use device=auto or device=cpu"),
    (2, "tpu", "device=", "device=tpu: not a device ganlab trains on; choose auto, cpu, cuda, cuda:N (the GPU of "
                          "index N) or mps"),
    (2, "cuda:-1", "device=", "device=cuda:-1: not a device ganlab trains on"),
    (2, "cuda:x", "device=", "device=cuda:x: not a device ganlab trains on"),
    (2, "CUDA", "device=", "device=CUDA: not a device ganlab trains on"),
])
def test_absent_or_unknown_devices_are_refused_in_one_line(gpus, count, name, option, message):
    gpus(count)
    with pytest.raises(ConfigError) as refused:
        devices.resolve_device(name, option)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_mps_resolves_where_it_is_available(gpus, monkeypatch):
    gpus(0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert devices.resolve_device("mps") == torch.device("mps")
    assert devices.resolve_device("auto") == torch.device("cpu")  # auto never picks mps


def test_the_training_config_takes_cuda_n_and_mps(gpus, monkeypatch):
    """The schema held an enum of auto, cpu, cuda: composing device=cuda:1 failed before it reached the check."""
    gpus(2)
    validate(make_cfg(*TINY, "device=cuda:1"))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    validate(make_cfg(*TINY, "device=mps"))
    with pytest.raises(ConfigError, match=r"^device=cuda:2 but this machine has 2 GPUs"):
        validate(make_cfg(*TINY, "device=cuda:2"))


@pytest.mark.parametrize("args, count, message", [
    (["train", *TINY, "device=cuda:1"], 0, "device=cuda:1 but CUDA is not available here; use device=auto or device=cpu"),
    (["train", *TINY, "device=cuda:3"], 2, "device=cuda:3 but this machine has 2 GPUs (cuda:0 to cuda:1)"),
    (["train", *TINY, "device=mps"], 0, "device=mps but MPS (Apple's GPU) is not available here"),
    (["classifier", "dataset=mnist", "device=cuda:3"], 2, "device=cuda:3 but this machine has 2 GPUs (cuda:0 to cuda:1)"),
    (["classifier", "dataset=mnist", "device=mps"], 0, "device=mps but MPS (Apple's GPU) is not available here"),
    (["eval", "RUN", "--device", "cuda:1"], 1, "--device cuda:1 but this machine has 1 GPU (cuda:0); use one of them, or "
                                               "--device auto"),
    (["eval", "RUN", "--device", "mps"], 0, "--device mps but MPS (Apple's GPU) is not available here"),
    (["sample", "RUN", "--n", "5", "--out", "x.npz", "--device", "cuda:2"], 2, "--device cuda:2 but this machine has 2 GPUs"),
])
def test_every_command_refuses_a_device_it_lacks_in_the_same_words(gpus, capsys, monkeypatch, tmp_path, args, count,
                                                                    message):
    gpus(count)
    code, out, err = in_process(args, capsys, monkeypatch, tmp_path)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"ganlab: error: {message}"), err
    assert "Traceback" not in out + err and not (tmp_path / "outputs").exists()


# --- a local parallel sweep's GPUs -----------------------------------------------------------------------------

JOBLIB = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 4}
LOCAL = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", "gpus_per_node": 1}
BASIC = {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}
SLURM = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}


def jobs(n: int, **keys) -> list[dict]:
    return [{"device": "auto", "replicas": 1, "seed": i, **keys} for i in range(n)]


def test_jobs_go_to_the_visible_gpus_in_turn(gpus):
    gpus(4)
    plan = devices.gpu_plan(JOBLIB, jobs(6), cores=16)
    assert [plan.gpu_of(i) for i in range(6)] == ["0", "1", "2", "3", "0", "1"]
    assert plan.override(5) == ["++hydra.job.env_set.GANLAB_GPU=1"]
    assert plan.line() == ("GPU placement: 6 jobs over 4 GPUs (GPUs 0, 1, 2, 3): job i on GPU i mod 4, by its own "
                           "CUDA_VISIBLE_DEVICES; 4 at once")


def test_an_existing_cuda_visible_devices_list_is_respected(gpus, monkeypatch):
    gpus(3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,GPU-8f2c,7")
    plan = devices.gpu_plan(LOCAL, jobs(4), cores=16)
    assert [plan.gpu_of(i) for i in range(4)] == ["5", "GPU-8f2c", "7", "5"]
    assert "(CUDA_VISIBLE_DEVICES=5,GPU-8f2c,7)" in plan.line()
    # CUDA uses the listed ids up to the first it cannot use: only those in use take jobs
    gpus(2)
    assert devices.gpu_plan(JOBLIB, jobs(4), cores=16).gpus == ["5", "GPU-8f2c"]


def test_replica_groups_are_placed_whole(gpus):
    """replicas=R is one process training R seeds: a job, and so its whole group, on one GPU."""
    gpus(2)
    plan = devices.gpu_plan(JOBLIB, jobs(4, replicas=8), cores=16)
    assert [plan.gpu_of(i) for i in range(4)] == ["0", "1", "0", "1"]
    assert "a job's replicas (8 seeds) train together on its GPU" in plan.line()


@pytest.mark.parametrize("count, launcher, configs", [
    (1, JOBLIB, jobs(4)),                              # one GPU: nothing to spread
    (0, JOBLIB, jobs(4)),                              # no CUDA
    (4, BASIC, jobs(4)),                               # one job after the other
    (4, SLURM, jobs(4)),                               # other machines: Slurm gives each job its GPUs
    (4, {**LOCAL, "gpus_per_node": 0}, jobs(4)),       # submitit hides the GPUs from jobs that ask for none
    (4, JOBLIB, jobs(4, device="cpu")),                # the jobs train on the CPU
    (4, JOBLIB, jobs(4, device="cuda:1")),             # the user placed them
])
def test_nothing_is_placed_without_several_gpus_and_jobs_side_by_side_on_cuda(gpus, count, launcher, configs):
    gpus(count)
    assert devices.gpu_plan(launcher, configs, cores=16) is None


def test_only_jobs_on_cudas_default_device_are_placed(gpus):
    gpus(2)
    configs = [*jobs(2), {"device": "cuda:1", "replicas": 1}, {"device": "cpu", "replicas": 1}]
    plan = devices.gpu_plan(JOBLIB, configs, cores=16)
    assert plan.placed == [0, 1] and plan.override(2) == [] and plan.override(3) == []
    assert plan.line().startswith("GPU placement: 2 jobs over 2 GPUs")


@pytest.fixture
def fresh_process(monkeypatch):
    """This process as a job's fresh worker: CUDA not asked yet, no GPU placed; CUDA_VISIBLE_DEVICES restored after."""
    monkeypatch.setattr(devices, "_cuda_queried", False)
    monkeypatch.setattr(devices, "_placed", None)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")


def test_a_job_sees_only_its_gpu(fresh_process, monkeypatch):
    import os

    monkeypatch.delenv(devices.GPU_ENV, raising=False)
    assert devices.place_job() is None and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"  # not a placed sweep
    monkeypatch.setenv(devices.GPU_ENV, "2")
    assert devices.place_job() == "GPU 2 (CUDA_VISIBLE_DEVICES=2: the sweep's GPU placement)"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    # A later job of the same joblib worker: CUDA has read the variable; the job says where it really trains.
    monkeypatch.setenv(devices.GPU_ENV, "3")
    assert devices.place_job() == ("GPU 2, not GPU 3: this worker process started CUDA in an earlier job, and CUDA "
                                   "reads CUDA_VISIBLE_DEVICES once per process")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2"


def test_a_job_whose_process_already_started_cuda_says_so(fresh_process, monkeypatch):
    import os

    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setenv(devices.GPU_ENV, "1")
    assert devices.place_job().startswith("the GPUs it started with, not GPU 1")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"


@pytest.mark.slow
def test_a_joblib_sweep_on_two_mocked_gpus_gives_each_job_its_gpu(gpus, capsys, monkeypatch, tmp_path):
    """The launching process sees 2 GPUs (mocked); its joblib workers are fresh processes on this CPU machine, so
    they train on the CPU, but each sets CUDA_VISIBLE_DEVICES to its GPU first and logs it."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    from ganlab import memory

    gpus(2)
    monkeypatch.setattr(memory, "available_bytes", lambda device: 64 * 2**30)  # the mocked GPUs' free memory
    code, out, err = in_process(["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *TINY,
                                 "seed=0,1,2"], capsys, monkeypatch, tmp_path)
    assert code == 0, err
    said = [line for line in (out + err).splitlines() if "GPU placement" in line]
    assert len(said) == 1 and said[0].endswith("GPU placement: 3 jobs over 2 GPUs (GPUs 0, 1): job i on GPU i mod 2, "
                                               "by its own CUDA_VISIBLE_DEVICES; 2 at once"), said
    for job in range(3):
        (log,) = (tmp_path / "outputs" / "multirun").glob(f"*/*/{job}_ring_nsgan_none_s{job}/train.log")
        text = log.read_text()
        # a fresh worker takes its turn's GPU; a reused one keeps its first job's and says so
        assert re.search(rf"GPU {job % 2} \(CUDA_VISIBLE_DEVICES={job % 2}: the sweep's GPU placement\)|"
                         rf"GPU \d, not GPU {job % 2}: this worker process started CUDA", text), text
        assert json.loads((log.parent / "summary.json").read_text())["status"] == "completed"
    # the job's record keeps its own overrides; the GPU is Hydra's, not the run's
    (overrides,) = (tmp_path / "outputs" / "multirun").glob("*/*/1_*/.hydra/overrides.yaml")
    assert "GANLAB_GPU" not in overrides.read_text()


# --- a resume on another device --------------------------------------------------------------------------------

def test_another_gpu_is_the_same_device_for_a_resume():
    saved = {"seed": 0, "device": "cuda:1", "eval": {"every": 5}}
    assert checkpoint.differing_keys(saved, {**saved, "device": "cuda:0"}) == []
    assert checkpoint.differing_keys(saved, {**saved, "device": "cuda"}) == []
    assert checkpoint.differing_keys(saved, {**saved, "device": "cpu"}) == ["device"]
    assert checkpoint.differing_keys(saved, {**saved, "device": "auto"}) == ["device"]


def test_a_run_resumed_on_another_gpu_takes_its_gpus_rng_stream(gpus, monkeypatch):
    """Trained on cuda:1 of a 2-GPU machine, resumed on cuda:0 of a 1-GPU one: cuda:1's stream goes to cuda:0, and
    the second saved state, for a GPU this machine lacks, is not set (torch's set_rng_state_all would set both)."""
    gpus(1)
    set_states = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, index: set_states.append((state, index)))
    first, second = torch.full((16,), 1, dtype=torch.uint8), torch.full((16,), 2, dtype=torch.uint8)
    state = {**checkpoint.rng_state(), "cuda": [first, second]}
    checkpoint.set_rng_state(state, "cuda:1", torch.device("cuda", 0))
    assert [(s[0].item(), i) for s, i in set_states] == [(2, 0)]
    set_states.clear()
    checkpoint.set_rng_state(state, "cuda", torch.device("cuda"))  # the same GPU: its own state
    assert [(s[0].item(), i) for s, i in set_states] == [(1, 0)]
    set_states.clear()
    checkpoint.set_rng_state(state)  # no device said (a replicas group, the reference rows): each GPU present its own
    assert [(s[0].item(), i) for s, i in set_states] == [(1, 0)]


def as_if_saved_on_cuda_1(path):
    """Rewrite a CPU run's checkpoint as a cuda:1 run's: every tensor's storage tagged cuda:1 (torch.load then
    needs map_location on a machine without it), its config's device cuda:1, and a CUDA RNG state for 2 GPUs."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state.pop(checkpoint.CHECKSUM_KEY)
    config = json.loads(state["config"])
    state["config"] = json.dumps({**config, "device": "cuda:1"})
    state["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]
    state[checkpoint.CHECKSUM_KEY] = checkpoint.content_digest(state)
    tagging = [True]
    torch.serialization.register_package(1, lambda storage: "cuda:1" if tagging[0] else None, lambda storage, where: None)
    try:
        buffer = io.BytesIO()
        torch.save(state, buffer)
    finally:
        tagging[0] = False
    path.write_bytes(buffer.getvalue())
    with pytest.raises(RuntimeError, match="CUDA"):  # as a GPU's checkpoint reads without map_location here
        torch.load(path, weights_only=True)


def test_a_run_trained_on_cuda_1_resumes_on_the_cpu_with_resume_force(finished):
    as_if_saved_on_cuda_1(finished / "checkpoint.pt")
    with pytest.raises(ConfigError, match=r"differs from the checkpoint's in device \(cuda:1 in the checkpoint, cpu now\); .*resume_force=true"):
        run(make_cfg(*TINY_RUN, "device=cpu", f"resume={finished}"), finished)
    summary = run(make_cfg(*TINY_RUN, "device=cpu", "resume_force=true", f"resume={finished}"), finished)
    assert summary["status"] == "completed" and summary["resumed_from_step"] == 20 and summary["device"] == "cpu"


# --- on a GPU (`pytest -m cuda`, scripts/gpu_check.sh; skipped here and in CI) ------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.cuda
@needs_cuda
def test_a_run_on_cuda_0_resumes_on_the_cpu_and_on_the_last_gpu(tmp_path):
    """A checkpoint written on a GPU (its tensors tagged cuda:0) continues on the CPU (map_location) with
    resume_force, and on another GPU of the machine (cuda:N, the same kind of device) without it."""
    first = tmp_path / "first"
    run(make_cfg(*TINY_RUN, "steps=20", "device=cuda:0"), first)
    summary = run(make_cfg(*TINY_RUN, "device=cpu", "resume_force=true", f"resume={first}"), first)
    assert summary["status"] == "completed" and summary["resumed_from_step"] == 20 and summary["device"] == "cpu"
    second = tmp_path / "second"
    run(make_cfg(*TINY_RUN, "steps=20", "device=cuda:0"), second)
    last = f"cuda:{torch.cuda.device_count() - 1}"
    summary = run(make_cfg(*TINY_RUN, f"device={last}", f"resume={second}"), second)
    assert summary["status"] == "completed" and summary["device"] == last


@pytest.mark.cuda
@needs_cuda
def test_replicas_train_on_cuda(tmp_path):
    run(make_cfg(*TINY, "replicas=4", "device=cuda"), tmp_path / "group")
    summaries = [json.loads((tmp_path / "group" / f"seed_{k}" / "summary.json").read_text()) for k in range(4)]
    assert [s["status"] for s in summaries] == ["completed"] * 4
    assert all(s["device"].startswith("cuda") for s in summaries)
