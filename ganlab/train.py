"""`run(cfg)`: train one GAN as the config says, evaluate it, write its run directory.

Read `run` top to bottom: skip a completed run, build (ganlab/experiment.py), then the loop: each
step is a D phase (`d_step` x n_critic), a G phase (`g_step`), a log tick, an evaluation tick and a
checkpoint tick; then the summary (ganlab/summary.py). The loop knows no loss and no remedy by
name: it calls the loss object and the remedy hooks. `d_step` and `g_step` are the only code that
updates the networks of a run; the tests and the benchmarks call them too.

`replicas=N` (`run_replicas`, at the end) trains seeds seed..seed+N-1 in one process: each replica
starts as its own run does (`set_up`), `Replicas.update` (ganlab/replicas.py) takes the step of all
of them at once through the same remedy hooks, vectorised, and each replica's `ReplicaLoop` keeps
the ticks, evaluations, checkpoints and summary of a run in its own run directory.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from ganlab import checkpoint, replicas
from ganlab.atomic import write_atomic
from ganlab.config import remedy_label, resolve_device, validate
from ganlab.errors import ConfigError, GanlabError
from ganlab.evaluation import Evaluation, Evaluator, eval_seed, make_evaluator, scalars
from ganlab.evaluation.worker import Offloader
from ganlab.experiment import (
    Experiment,
    auto_checkpoint,
    build,
    restore,
    seed_everything,
)
from ganlab.metrics import REFERENCES
from ganlab.runlock import RunLock
from ganlab.speed import Speed
from ganlab.summary import RunSummary
from ganlab.tracking import Tracker, finite_or_none

log = logging.getLogger(__name__)

# Keys a resume=auto re-run may change without making a completed run a different one.
AUTO_RESUME_IGNORED = ("resume", "resume_force", "eval.background", "replicas")  # replicas: see checkpoint.RUN_LENGTH_KEYS


class Diverged(GanlabError):
    exit_code = 3


class Interrupted(GanlabError):
    """SIGINT or SIGTERM: the run saved its state and stopped; exit status 128 + the signal's number."""

    def __init__(self, signum: int, step: int, run_dir: Path):
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name} after step {step}; its checkpoint is "
                         f"saved: continue with `ganlab train resume={run_dir}`")


# --- the two phases of a step ---------------------------------------------------------------------------

def d_step(exp: Experiment, real: Tensor, z: Tensor, speed: Speed | None = None) -> Tensor:
    """One D update (D and the remedy's d-side networks) on a real batch and G's codes; the loss,
    detached (no host sync). Everything it touches comes in as arguments, so a loop over several
    seeds at once can call it on stacked parameters."""
    for opt in exp.d_opts:
        opt.zero_grad(set_to_none=True)
    with speed.autocast() if speed is not None else contextlib.nullcontext():
        d_loss = exp.remedy.d_loss(exp.G, exp.D, exp.loss, real, z)
    d_loss.backward()
    for opt in exp.d_opts:
        opt.step()
    exp.loss.after_d_step(exp.D)
    return d_loss.detach().float()  # a no-op for float32; bf16 under amp


def g_step(exp: Experiment, real: Tensor, z: Tensor, speed: Speed | None = None) -> Tensor:
    """One G update (G and the remedy's g-side networks); `real` is the last D batch (remedies such
    as unrolled and feature matching use it). The loss, detached."""
    for opt in exp.g_opts:
        opt.zero_grad(set_to_none=True)
    try:
        for p in exp.fixed_in_g_step:  # D's side: its gradients here would be thrown away by the next D step
            p.requires_grad_(False)
        with speed.autocast() if speed is not None else contextlib.nullcontext():
            g_loss = exp.remedy.g_loss(exp.G, exp.D, exp.loss, real, z)
        g_loss.backward()
    finally:
        for p in exp.fixed_in_g_step:
            p.requires_grad_(True)
    for opt in exp.g_opts:
        opt.step()
    return g_loss.detach().float()


def one_step(exp: Experiment, batch_size: int, speed: Speed | None = None) -> Tensor:
    """One whole training step in the loop's order (n_critic D steps, each on a fresh real batch and
    fresh codes, then the G step on the last real batch), without the loop's bookkeeping: what the
    benchmarks time. G's loss, detached."""
    for _ in range(exp.loss.n_critic):
        real = exp.remedy.real_batch(exp.data, batch_size)
        real = speed.batch(real) if speed is not None else real
        d_step(exp, real, torch.randn(batch_size, exp.latent_dim, device=real.device), speed)
    return g_step(exp, real, torch.randn(batch_size, exp.latent_dim, device=real.device), speed)


def grad_norm(module: nn.Module) -> Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


# --- run --------------------------------------------------------------------------------------------------

def run(cfg: DictConfig, run_dir: str | Path, labels: dict | None = None, progress: bool | None = None) -> dict:
    """Train one GAN as `cfg` says; write events, pictures, checkpoint, samples and summary.json
    into `run_dir`; return the summary (as summary.json holds it). A diverged run still writes its
    summary. The run directory is locked while the run trains: a second run into it is refused."""
    validate(cfg)
    if cfg.replicas > 1:  # seeds seed..seed+replicas-1 in one vectorised loop, a run directory each
        return run_replicas(cfg, Path(run_dir), labels, progress)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir), contextlib.ExitStack() as held:
        labels = run_labels(cfg, labels)
        config = OmegaConf.to_container(cfg, resolve=True)
        done = completed_run(cfg, run_dir, config)
        if done is not None:
            return done.to_dict()
        device = training_device(cfg)
        resume = auto_checkpoint(run_dir) if cfg.resume == "auto" else checkpoint.find(cfg.resume) if cfg.resume else None
        # Started first: the worker imports while the run builds, then takes the reference rows' offline part.
        offloader = held.enter_context(contextlib.closing(Offloader(background=cfg.eval.background)))
        setup = set_up(cfg, run_dir, labels, config, device, resume, offloader)
        summary, start_step = setup.summary, setup.start_step
        with setup.tracker(progress) as tracker, StopRequest() as stop:
            loop = Loop(cfg, setup.exp, setup.evaluator, tracker, offloader, run_dir, summary, setup.state,
                        start_step, device)
            try:
                for step in range(start_step + 1, cfg.steps + 1):
                    loop.train_step(step)
                    # Periodic and on-signal checkpoints (the final one is written with the samples).
                    if step < loop.steps and (stop.signum is not None or loop.checkpoint_due(step)):
                        loop.save_state(step)
                        if stop.signum is not None:
                            raise Interrupted(stop.signum, step, run_dir)
                loop.write_offloaded(loop.offloader.drain())
                summary.status = "completed"
            except Diverged as exc:  # the last periodic checkpoint is kept: it is the last good state
                summary.status, summary.diverged_step, summary.error = "diverged", loop.step, str(exc)
            except Interrupted as exc:
                summary.status, summary.error = "interrupted", str(exc)
                raise
            except BaseException as exc:
                summary.error = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                unsaved = loop.finish()
                tracker.finish(summary.to_dict())
    if unsaved is not None:
        raise unsaved
    if summary.status == "diverged":
        raise Diverged(f"run diverged at step {summary.step}: {summary.error}; see {run_dir / 'summary.json'}")
    return finite_or_none(summary.to_dict())  # as summary.json holds it: null, not NaN, for an undefined metric


def run_labels(cfg: DictConfig, labels: dict | None) -> dict:
    # Hydra records no choice for a list (`remedy=[a,b]`): keep our own label where it gives None.
    return {**default_labels(cfg), **{k: v for k, v in (labels or {}).items() if v is not None}}


def training_device(cfg: DictConfig) -> torch.device:
    device = resolve_device(cfg.device)
    if device.type == "cpu" and cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    return device


@dataclass
class SetUp:
    """A run built (or restored) and ready for its first step."""

    cfg: DictConfig
    run_dir: Path
    exp: Experiment
    evaluator: Evaluator
    summary: RunSummary
    start_step: int
    state: dict  # the loop's bookkeeping from the checkpoint ({} for a fresh run)

    def tracker(self, progress: bool | None) -> Tracker:
        labels, cfg = self.summary.labels, self.cfg
        hparams = {"dataset": labels["dataset"], "loss": labels["loss"], "remedy": labels["remedy"],
                   "seed": cfg.seed, "steps": cfg.steps, "batch_size": cfg.batch_size}
        # On resume, TensorBoard drops what the first segment logged after the checkpoint's step.
        return Tracker(self.run_dir, cfg.steps, hparams, self.evaluator.metric_keys, progress=progress,
                       purge_step=self.start_step + 1 if self.start_step else None)


def set_up(cfg: DictConfig, run_dir: Path, labels: dict, config: dict, device: torch.device,
           resume: Path | None, offloader: Offloader | None = None) -> SetUp:
    """Seed, build, then measure the reference rows (a fresh run) or restore the checkpoint `resume`:
    the start of a run, and of each replica of replicas=N, which thus starts as the run of its seed.
    With the run's `offloader`, the rows' offline metrics arrive through it (Loop.write_offloaded)."""
    seed_everything(cfg.seed)
    summary = RunSummary(step=0, run_dir=str(run_dir), labels=labels, seed=cfg.seed, device=str(device),
                         config=config)
    exp, evaluator, references = start(cfg, device, run_dir, summary, resume is None, offloader)
    start_step, state = (0, {}) if resume is None else restore(resume, exp, cfg, config)
    summary.references = references or dict(state.get("references", {}))
    summary.n_modes, summary.protocol = evaluator.n_modes, evaluator.protocol()
    log.info("run directory: %s (device %s)%s", run_dir, device, f"; resumed from step {start_step}" if start_step else "")
    if references:
        log.info("reference rows:%s", reference_headlines(evaluator, references))
    return SetUp(cfg, run_dir, exp, evaluator, summary, start_step, state)


def default_labels(cfg: DictConfig) -> dict:
    """Short names of the chosen group options, from their targets (the CLI passes Hydra's choices)."""
    labels = {group: str(OmegaConf.select(cfg, f"{group}._target_", default=group)).rsplit(".", 1)[-1].lower()
              for group in ("dataset", "loss")}
    return {**labels, "remedy": remedy_label(cfg.remedy)}


def completed_run(cfg: DictConfig, run_dir: Path, config: dict) -> RunSummary | None:
    """resume=auto (a sweep re-run): the run's summary when it already completed with this config and
    at least these steps (then it is skipped); None when it is to train (afresh, on, or resumed)."""
    if cfg.resume != "auto":
        return None
    done = RunSummary.read_or_none(run_dir)
    if done is None or done.status != "completed":
        return None
    differ = differs_from_completed(done.to_dict(), config)
    if differ:  # never report a run as done that is not the one asked for
        raise ConfigError(f"resume=auto: {run_dir} holds a completed run whose config differs in "
                          f"{', '.join(differ[:5])}; choose another directory, or repeat its settings")
    if done.step >= cfg.steps:
        log.info("%s: already completed (step %s); skipped", run_dir, done.step)
        return done
    log.info("%s: completed at step %s; training on to steps=%d", run_dir, done.step, cfg.steps)
    return None


def differs_from_completed(summary: dict, config: dict) -> list[str]:
    """For resume=auto: the keys in which a completed run's config differs from the config asked for
    now, other than a larger `steps` (the run then trains on). Empty: the run is what was asked for."""
    saved = summary.get("config")
    if not isinstance(saved, dict):
        return ["config (summary.json holds none)"]
    differ = checkpoint.differing_keys(saved, config, ignore=AUTO_RESUME_IGNORED)
    if differ == ["steps"] and isinstance(saved.get("steps"), int) and saved["steps"] < config["steps"]:
        return []
    return differ


def start(cfg: DictConfig, device: torch.device, run_dir: Path, summary: RunSummary,
          fresh: bool, offloader: Offloader | None = None) -> tuple[Experiment, Evaluator, dict]:
    """Build the experiment and its evaluator, and (for a fresh run) measure the reference rows on
    the untrained G. A fresh run that fails here leaves a summary saying so, for the sweep's report."""
    try:
        exp = build(cfg, device)
        evaluator = make_evaluator(exp.data, exp.latent_dim, cfg.eval, exp.loss.wasserstein_critic, device, cfg.metrics)
        return exp, evaluator, measure_references(evaluator, exp, cfg.seed, offloader) if fresh else {}
    except BaseException as exc:
        if fresh:  # a resumed run keeps the summary it has
            failed = RunSummary(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                                error=str(exc), labels=summary.labels, seed=summary.seed, config=summary.config)
            with contextlib.suppress(GanlabError):  # a full disk must not hide the error that got us here
                failed.write(run_dir)
        raise


def measure_references(evaluator: Evaluator, exp: Experiment, seed: int, offloader: Offloader | None = None) -> dict:
    """The evaluator's reference rows for the freshly built (untrained) G. They draw from an RNG of
    their own (the evaluation seed of step 0, which no evaluation uses), and every global RNG is put
    back afterwards: measuring them never changes the training trajectory."""
    saved = checkpoint.rng_state()
    try:
        rng = torch.Generator(next(exp.G.parameters()).device).manual_seed(eval_seed(seed, 0))
        return evaluator.references(exp.G, exp.D, exp.remedy, rng, offloader)
    finally:
        checkpoint.set_rng_state(saved)


def reference_headlines(evaluator: Evaluator, references: dict) -> str:
    """One line of what the protocol gives the reference distributions (a scale for the run's numbers)."""
    parts = []
    for name, metrics in references.items():
        try:
            parts.append(f"  {REFERENCES.get(name, name)}:{evaluator.headline(metrics)}")
        except (KeyError, TypeError):  # a reference without the headline's metrics: summary.json has it all
            continue
    return ";".join(parts)


def columns(history: dict[int, dict]) -> dict:
    """{step: {metric: value}} -> {"steps": [...], "metrics": {metric: [value or None per step]}}."""
    steps = sorted(history)
    names = list(dict.fromkeys(k for s in steps for k in history[s]))
    return {"steps": steps, "metrics": {k: [history[s].get(k) for s in steps] for k in names}}


# --- the loop's state and ticks ---------------------------------------------------------------------------

class Loop:
    """What the training loop keeps between steps (recent losses, every evaluation's numbers, the
    time), its ticks (log, evaluation, checkpoint) and the summary at the end. A checkpoint's
    `loop` entry restores it (`state`), so a resumed run continues bit-identically."""

    def __init__(self, cfg: DictConfig, exp: Experiment, evaluator: Evaluator, tracker: Tracker,
                 offloader: Offloader, run_dir: Path, summary: RunSummary, state: dict, start_step: int,
                 device: torch.device):
        self.exp, self.evaluator, self.tracker, self.offloader = exp, evaluator, tracker, offloader
        self.run_dir, self.summary, self.start_step, self.step = run_dir, summary, start_step, start_step
        # Plain ints: reading a DictConfig costs ~18 us, about 3 % of a step at these sizes.
        self.steps, self.batch, self.seed = cfg.steps, cfg.batch_size, cfg.seed
        self.eval_every, self.log_every = cfg.eval.every, cfg.log.every
        self.checkpoint_every = cfg.checkpoint.every
        self.checkpoint_owed: int | None = None  # the step a periodic checkpoint has been owed since
        self.device = device
        self.speed = Speed(cfg.speed, device)
        self.speed.prepare(exp.G, exp.D)
        # Evaluation draws from its own RNG, reseeded from (seed, step) at each eval: the eval cadence
        # never changes the training trajectory, nor the samples an eval at a given step draws.
        self.eval_rng = torch.Generator(device)
        evaluator.load_state_dict(state)
        # Every evaluation's scalars, for the convergence figures of `ganlab report` (step -> metrics).
        self.metric_history: dict[int, dict] = {int(k): dict(v) for k, v in state.get("metric_history", {}).items()}
        self.final_extra: dict = dict(state.get("final_extra", {}))  # offloaded metrics (W1, W2) of the latest evaluation
        # Detached losses since the last log tick: appending costs no kernel and no host sync.
        self.recent_d = [torch.tensor(v, device=device) for v in state.get("recent_d", [])]
        self.recent_g = [torch.tensor(v, device=device) for v in state.get("recent_g", [])]
        self.wall_before = float(state.get("wall_seconds", 0.0))  # earlier segments of a resumed run
        self.started = time.perf_counter()
        self.last: Evaluation | None = None
        self.label = ""  # before its log lines: which replica of replicas=N speaks
        tracker.advance(start_step, "")
        if not start_step:  # once per run, at step 0; a resumed run logged them in its first segment
            tracker.scalars(0, {f"reference/{name}/{k}": v for name, metrics in summary.references.items()
                                for k, v in metrics.items()})

    def train_step(self, step: int) -> None:
        """One step: the D phase (n_critic updates, each on fresh real and fake batches), the G phase,
        and the log and evaluation ticks when they are due."""
        exp, speed = self.exp, self.speed
        self.step = step
        exp.remedy.begin_step(step)
        eval_now, log_now = self.due(step)
        for _ in range(exp.loss.n_critic):
            real = speed.batch(exp.remedy.real_batch(exp.data, self.batch))
            z = torch.randn(self.batch, exp.latent_dim, device=self.device)
            self.recent_d.append(d_step(exp, real, z, speed))
        d_grad = grad_norm(exp.D) if log_now else None  # before the G step adds to D's grads
        z = torch.randn(self.batch, exp.latent_dim, device=self.device)
        self.recent_g.append(g_step(exp, real, z, speed))
        if log_now:
            self.log_tick(step, d_grad, grad_norm(exp.G), eval_now)

    def checkpoint_due(self, step: int) -> bool:
        """Whether to write the periodic checkpoint after `step`. It is owed every checkpoint.every
        steps, and written at the first step from then on at which the evaluation worker has no job in
        hand: a checkpoint holds every evaluation's results, so one written while the worker computes
        the same step's W1/W2 and pictures would stall training for that whole job (about 10 % of the
        default run in one profile on a busy machine, docs/benchmarks.md). At most checkpoint.every
        steps late, then it waits.
        Inline evaluation (eval.background=false) is never busy: checkpoints fall on the multiples."""
        if step % self.checkpoint_every == 0 and self.checkpoint_owed is None:
            self.checkpoint_owed = step
        if self.checkpoint_owed is None:
            return False
        if self.offloader.busy() and step - self.checkpoint_owed < self.checkpoint_every:
            return False
        self.checkpoint_owed = None
        return True

    def due(self, step: int) -> tuple[bool, bool]:
        """Whether step `step` ends with an evaluation, and whether with a log tick."""
        eval_now = step % self.eval_every == 0 or step == self.steps
        return eval_now, eval_now or step % self.log_every == 0

    def log_tick(self, step: int, d_grad: Tensor, g_grad: Tensor, eval_now: bool) -> None:
        """The only host syncs of the loop are here and in the evaluation. `d_grad`, `g_grad`: the
        norms of D's gradient after the last D step and of G's after the G step."""
        d_mean, g_mean = torch.stack([torch.stack(self.recent_d).mean(), torch.stack(self.recent_g).mean()]).tolist()
        self.recent_d.clear()
        self.recent_g.clear()
        if not (np.isfinite(d_mean) and np.isfinite(g_mean)):
            raise Diverged(f"the losses became non-finite (D {d_mean}, G {g_mean})")
        self.tracker.scalars(step, {"loss/d": d_mean, "loss/g": g_mean,
                                    "grad_norm/d": d_grad.item(), "grad_norm/g": g_grad.item()})
        self.write_offloaded(self.offloader.ready())
        info = f"D {d_mean:.3f}  G {g_mean:.3f}"
        headline = self.evaluate(step, info) if eval_now else None  # between evaluations the bar keeps the last
        self.tracker.advance(step, info, headline)

    def evaluate(self, step: int, info: str) -> str:
        # Weights that blew up while the losses stayed finite (lr=1e30) would crash the metrics (an
        # SVD of non-finite values): that is a divergence.
        problem = checkpoint.unhealthy(self.exp)
        if problem is not None:
            raise Diverged(problem)
        self.eval_rng.manual_seed(eval_seed(self.seed, step))
        self.last = ev = self.evaluator.evaluate(self.exp.G, self.exp.D, self.exp.remedy, self.eval_rng, step=step)
        self.tracker.scalars(step, {f"metrics/{k}": v for k, v in scalars(ev).items()})
        self.metric_history.setdefault(step, {}).update(scalars(ev))
        self.offloader.submit(self.evaluator.job(step, ev, last=step == self.steps))
        headline = self.evaluator.headline(ev.metrics)
        log.info("%sstep %d of %d  %s%s", self.label, step, self.steps, info, headline)  # train.log tells the run's story
        return headline

    def write_offloaded(self, results) -> None:
        for result in results:
            if result.references:  # the reference rows' offline part (ReferenceJob), logged at step 0
                for name, metrics in result.references.items():
                    self.summary.references.setdefault(name, {}).update(metrics)
                self.tracker.scalars(0, {f"reference/{name}/{k}": v for name, metrics in result.references.items()
                                         for k, v in metrics.items()})
            self.tracker.scalars(result.step, {f"metrics/{k}": v for k, v in result.scalars.items()})
            self.tracker.images(result.step, result.images)
            self.final_extra.update(result.scalars)
            self.metric_history.setdefault(result.step, {}).update(result.scalars)

    def save_state(self, at_step: int) -> None:
        """The full state after `at_step`: what a resume needs to continue bit-identically. Only a
        good state is saved: losses that turned non-finite since the last log tick, or weights that
        blew up while the losses stayed finite, stop the run here, so the checkpoint on disk stays
        the last good one."""
        if self.recent_d and not bool(torch.isfinite(torch.stack(self.recent_d + self.recent_g)).all()):
            raise Diverged(f"the losses became non-finite (found at step {at_step}, before its checkpoint)")
        problem = checkpoint.unhealthy(self.exp)
        if problem is not None:
            raise Diverged(f"{problem} (found at step {at_step}, before its checkpoint)")
        self.write_offloaded(self.offloader.drain())  # the pending W1/W2 and pictures belong to steps <= at_step
        state = {**self.evaluator.state_dict(), "final_extra": self.final_extra,
                 "metric_history": self.metric_history, "references": self.summary.references,
                 "recent_d": [float(v) for v in self.recent_d], "recent_g": [float(v) for v in self.recent_g],
                 "wall_seconds": self.wall_before + time.perf_counter() - self.started}
        self.tracker.flush()  # TensorBoard up to the checkpoint on disk first: a kill -9 loses nothing before it
        checkpoint.save(self.run_dir / checkpoint.NAME, self.exp, at_step, state, self.summary.config, self.rng_state())

    def rng_state(self) -> dict:
        """The RNG states a resume continues from: the global ones, which a run trains from."""
        return checkpoint.rng_state()

    def finish(self) -> GanlabError | None:
        """Complete the summary; for a completed run write samples.npz and the final checkpoint.
        Returns the error of a final save that failed (a full disk), to raise once the summary is out."""
        if self.summary.status != "completed" and self.offloader.failed is None:
            # What the worker still owes (the reference rows' W1/W2) goes in too; best effort: the run's
            # own error is the one to report.
            with contextlib.suppress(Exception):
                self.write_offloaded(self.offloader.drain())
        self.offloader.close()
        s, segment = self.summary, time.perf_counter() - self.started
        s.step, s.wall_seconds = self.step, self.wall_before + segment
        s.steps_per_second = (self.step - self.start_step) / segment if segment > 0 else 0.0
        s.resumed_from_step = self.start_step or None
        s.protocol = self.evaluator.protocol()  # now with what evaluations learnt (the real reference's modes)
        if self.last is not None:
            s.metrics = scalars(self.last)
            if s.status == "completed":
                s.metrics.update(self.final_extra)
            s.mode_counts = self.last.metrics.get("mode_counts")
        s.mode_history = self.evaluator.history.summary()
        s.history = columns(self.metric_history) if self.metric_history else None
        if s.status != "completed":
            return None
        try:
            # The final metrics are computed on exactly these samples.
            write_atomic(self.run_dir / "samples.npz", lambda f: np.savez(f, **self.evaluator.saved_samples(self.last)))
            self.save_state(self.step)
        except Diverged as exc:  # weights that blew up since the last log tick
            s.status, s.diverged_step, s.error = "diverged", self.step, str(exc)
        except GanlabError as exc:  # a full disk: the summary says so, the old checkpoint stays
            s.status, s.error = "failed", str(exc)
            return exc
        return None


# --- replicas=N: several seeds in one vectorised loop ----------------------------------------------------

def run_replicas(cfg: DictConfig, run_dir: Path, labels: dict | None, progress: bool | None) -> dict:
    """replicas=N: seeds seed..seed+N-1 trained together, each step vectorised over them
    (ganlab/replicas.py). Replica k writes the run directory a separate run of seed+k would, as
    `run_dir/seed_<seed+k>/`, and resumes from its own checkpoint (resume=auto, or resume=run_dir);
    run_dir holds no summary.json of its own, so a report finds N runs. Returns {"replicas":
    [each replica's summary]}."""
    replicas.check(cfg, build(cfg, torch.device("cpu")))  # refused in one line before anything is written
    configs = replicas.replica_configs(cfg)
    dirs = [replicas.replica_dir(run_dir, c.seed) for c in configs]
    labels = run_labels(cfg, labels)
    summaries: dict[Path, dict] = {}
    with contextlib.ExitStack() as held:
        for path in (run_dir, *dirs):
            path.mkdir(parents=True, exist_ok=True)
            held.enter_context(RunLock(path))
        device = training_device(cfg)
        setups, streams, resumed = [], [], []
        for one, path in zip(configs, dirs):
            config = OmegaConf.to_container(one, resolve=True)
            done = completed_run(one, path, config)
            if done is not None:
                summaries[path] = done.to_dict()
                continue
            replicas.write_record(run_dir, path, one.seed)
            source = None if not one.resume else replicas.replica_dir(one.resume, one.seed)
            resume = auto_checkpoint(path) if one.resume == "auto" else checkpoint.find(source) if source else None
            setups.append(set_up(one, path, labels, config, device, resume))
            setups[-1].summary.replica = {"index": one.seed - cfg.seed, "of": cfg.replicas, "first_seed": cfg.seed}
            streams.append(replicas.training_stream(device))  # what the run of this seed draws from next
            resumed += [resume] if resume else []
        if setups:
            summaries.update(train_replicas(cfg, run_dir, setups, streams, resumed, device, progress, held))
    diverged = [str(p) for p, s in summaries.items() if s.get("status") == "diverged"]
    if diverged:
        raise Diverged(f"{len(diverged)} of {cfg.replicas} replicas diverged: see the summary.json in {', '.join(diverged)}")
    return {"replicas": [summaries[p] for p in dirs]}


def train_replicas(cfg: DictConfig, run_dir: Path, setups: list[SetUp], streams: list[torch.Generator],
                   resumed: list[Path], device: torch.device, progress: bool | None,
                   held: contextlib.ExitStack) -> dict[Path, dict]:
    """The loop of `run` for a group of replicas: one vectorised step, then each replica's ticks.
    A replica that diverges stops ticking (the others train on); a signal checkpoints them all."""
    start_step = replicas.same_step({s.run_dir.name: s.start_step for s in setups})
    if resumed:
        replicas.restore_shared(checkpoint.read(resumed[0])["rng"], device)
    else:
        replicas.seed_shared(cfg.seed, cfg.replicas)
    group = replicas.Replicas([s.exp for s in setups], streams, cfg.batch_size, device)
    offloader = replicas.SharedOffloader(cfg.eval.background, len(setups))
    loops = [ReplicaLoop(s.cfg, s.exp, s.evaluator, held.enter_context(s.tracker(progress if k == 0 else False)),
                         offloader.view(k), s.run_dir, s.summary, s.state, start_step, device, group=group, index=k)
             for k, s in enumerate(setups)]
    stop, live = held.enter_context(StopRequest()), list(loops)
    try:
        for step in range(start_step + 1, cfg.steps + 1):
            for s in setups:
                s.exp.remedy.begin_step(step)
            eval_now, log_now = loops[0].due(step)
            d_losses, g_losses, d_grads, g_grads = group.train_step(log_now, loops[0].speed)
            for loop in list(live):
                k = loop.index
                try:
                    loop.record(step, d_losses[:, k], g_losses[k], d_grads, g_grads, eval_now)
                    if step < cfg.steps and (stop.signum is not None or step % cfg.checkpoint.every == 0):
                        loop.save_state(step)
                except Diverged as exc:  # this replica's last periodic checkpoint is kept; the others go on
                    loop.summary.status, loop.summary.diverged_step, loop.summary.error = "diverged", step, str(exc)
                    live.remove(loop)
            if stop.signum is not None:
                raise Interrupted(stop.signum, step, run_dir)
            if not live:
                break
        for loop in live:
            loop.write_offloaded(loop.offloader.drain())
            loop.summary.status = "completed"
    except Interrupted as exc:
        for loop in live:
            loop.summary.status, loop.summary.error = "interrupted", str(exc)
        raise
    except BaseException as exc:
        for loop in live:
            loop.summary.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        unsaved = [loop.finish() for loop in loops]
        for loop in loops:
            loop.tracker.finish(loop.summary.to_dict())
    for error in unsaved:
        if error is not None:
            raise error
    return {loop.run_dir: finite_or_none(loop.summary.to_dict()) for loop in loops}


class ReplicaLoop(Loop):
    """One replica's ticks (log, evaluation, checkpoint, summary) in a `replicas.Replicas` group. Its
    parameters live in the group's stacked tensors: its slice is copied into its own Experiment
    before an evaluation or a checkpoint reads it, and its checkpoint's RNG is its own stream."""

    def __init__(self, *args, group: replicas.Replicas, index: int):
        super().__init__(*args)
        self.group, self.index = group, index
        self.label = f"[{self.run_dir.name}] "

    def record(self, step: int, d_losses: Tensor, g_loss: Tensor, d_grads: Tensor | None, g_grads: Tensor | None,
               eval_now: bool) -> None:
        """This replica's part of a vectorised step (its n_critic D losses, its G loss, and on a log
        tick every replica's gradient norms), then its log tick when one is due."""
        self.step = step
        self.recent_d.extend(d_losses.unbind())
        self.recent_g.append(g_loss)
        if d_grads is not None:
            self.log_tick(step, d_grads[self.index], g_grads[self.index], eval_now)

    def evaluate(self, step: int, info: str) -> str:
        self.group.unstack(self.index)
        return super().evaluate(step, info)

    def save_state(self, at_step: int) -> None:
        self.group.unstack(self.index, optimizers=True)
        super().save_state(at_step)

    def rng_state(self) -> dict:
        return self.group.rng_state(self.index)


class StopRequest:
    """While active, SIGINT and SIGTERM only set `signum`: the loop finishes its step, writes a
    checkpoint and stops (a laptop lid, a preempted SLURM job). Outside the main thread, where
    Python cannot install handlers, it does nothing."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
