"""`run(cfg)`: train one GAN as the config says, evaluate it, write its run directory.

Read `run` top to bottom: skip a completed run, build (ganlab/experiment.py), then the loop: each
step is a D phase (`d_step` x n_critic), a G phase (`g_step`), a log tick, an evaluation tick and a
checkpoint tick; then the summary (ganlab/summary.py). The loop knows no loss and no remedy by
name: it calls the loss object and the remedy hooks. `d_step` and `g_step` are the only code that
updates the networks; the tests and the benchmarks call them too.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from ganlab import checkpoint
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
AUTO_RESUME_IGNORED = ("resume", "resume_force", "eval.background")


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
    with speed.autocast() if speed is not None else contextlib.nullcontext():
        g_loss = exp.remedy.g_loss(exp.G, exp.D, exp.loss, real, z)
    g_loss.backward()
    for opt in exp.g_opts:
        opt.step()
    return g_loss.detach().float()


def grad_norm(module: nn.Module) -> Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


# --- run --------------------------------------------------------------------------------------------------

def run(cfg: DictConfig, run_dir: str | Path, labels: dict | None = None, progress: bool | None = None) -> dict:
    """Train one GAN as `cfg` says; write events, pictures, checkpoint, samples and summary.json
    into `run_dir`; return the summary (as summary.json holds it). A diverged run still writes its
    summary. The run directory is locked while the run trains: a second run into it is refused."""
    validate(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        # Hydra records no choice for a list (`remedy=[a,b]`): keep our own label where it gives None.
        labels = {**default_labels(cfg), **{k: v for k, v in (labels or {}).items() if v is not None}}
        config = OmegaConf.to_container(cfg, resolve=True)
        done = completed_run(cfg, run_dir, config)
        if done is not None:
            return done.to_dict()
        seed_everything(cfg.seed)
        device = resolve_device(cfg.device)
        if device.type == "cpu" and cfg.cpu_threads > 0:
            torch.set_num_threads(cfg.cpu_threads)
        resume = auto_checkpoint(run_dir) if cfg.resume == "auto" else checkpoint.find(cfg.resume) if cfg.resume else None
        summary = RunSummary(step=0, run_dir=str(run_dir), labels=labels, seed=cfg.seed, device=str(device),
                             config=config)
        exp, evaluator, references = start(cfg, device, run_dir, summary, resume is None)
        start_step, state = (0, {}) if resume is None else restore(resume, exp, cfg, config)
        summary.references = references or dict(state.get("references", {}))
        summary.n_modes, summary.protocol = evaluator.n_modes, evaluator.protocol()
        log.info("run directory: %s (device %s)%s", run_dir, device, f"; resumed from step {start_step}" if start_step else "")
        if references:
            log.info("reference rows:%s", reference_headlines(evaluator, references))
        hparams = {"dataset": labels["dataset"], "loss": labels["loss"], "remedy": labels["remedy"],
                   "seed": cfg.seed, "steps": cfg.steps, "batch_size": cfg.batch_size}
        # On resume, TensorBoard drops what the first segment logged after the checkpoint's step.
        with Tracker(run_dir, cfg.steps, hparams, evaluator.metric_keys, progress=progress,
                     purge_step=start_step + 1 if start_step else None) as tracker, StopRequest() as stop:
            loop = Loop(cfg, exp, evaluator, tracker, Offloader(background=cfg.eval.background), run_dir,
                        summary, state, start_step, device)
            try:
                for step in range(start_step + 1, cfg.steps + 1):
                    loop.train_step(step)
                    # Periodic and on-signal checkpoints (the final one is written with the samples).
                    if step < cfg.steps and (stop.signum is not None or step % cfg.checkpoint.every == 0):
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
          fresh: bool) -> tuple[Experiment, Evaluator, dict]:
    """Build the experiment and its evaluator, and (for a fresh run) measure the reference rows on
    the untrained G. A fresh run that fails here leaves a summary saying so, for the sweep's report."""
    try:
        exp = build(cfg, device)
        evaluator = make_evaluator(exp.data, exp.latent_dim, cfg.eval, exp.loss.wasserstein_critic, device, cfg.metrics)
        return exp, evaluator, measure_references(evaluator, exp, cfg.seed) if fresh else {}
    except BaseException as exc:
        if fresh:  # a resumed run keeps the summary it has
            failed = RunSummary(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                                error=str(exc), labels=summary.labels, seed=summary.seed, config=summary.config)
            with contextlib.suppress(GanlabError):  # a full disk must not hide the error that got us here
                failed.write(run_dir)
        raise


def measure_references(evaluator: Evaluator, exp: Experiment, seed: int) -> dict:
    """The evaluator's reference rows for the freshly built (untrained) G. They draw from an RNG of
    their own (the evaluation seed of step 0, which no evaluation uses), and every global RNG is put
    back afterwards: measuring them never changes the training trajectory."""
    saved = checkpoint.rng_state()
    try:
        rng = torch.Generator(next(exp.G.parameters()).device).manual_seed(eval_seed(seed, 0))
        return evaluator.references(exp.G, exp.D, exp.remedy, rng)
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
        eval_now = step % self.eval_every == 0 or step == self.steps
        log_now = eval_now or step % self.log_every == 0
        for _ in range(exp.loss.n_critic):
            real = speed.batch(exp.remedy.real_batch(exp.data, self.batch))
            z = torch.randn(self.batch, exp.latent_dim, device=self.device)
            self.recent_d.append(d_step(exp, real, z, speed))
        d_grad = grad_norm(exp.D) if log_now else None  # before the G step adds to D's grads
        z = torch.randn(self.batch, exp.latent_dim, device=self.device)
        self.recent_g.append(g_step(exp, real, z, speed))
        if log_now:
            self.log_tick(step, d_grad, eval_now)

    def log_tick(self, step: int, d_grad: Tensor, eval_now: bool) -> None:
        """The only host syncs of the loop are here and in the evaluation."""
        d_mean, g_mean = torch.stack([torch.stack(self.recent_d).mean(), torch.stack(self.recent_g).mean()]).tolist()
        self.recent_d.clear()
        self.recent_g.clear()
        if not (np.isfinite(d_mean) and np.isfinite(g_mean)):
            raise Diverged(f"the losses became non-finite (D {d_mean}, G {g_mean})")
        self.tracker.scalars(step, {"loss/d": d_mean, "loss/g": g_mean,
                                    "grad_norm/d": d_grad.item(), "grad_norm/g": grad_norm(self.exp.G).item()})
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
        self.offloader.submit(self.evaluator.job(step, ev))
        headline = self.evaluator.headline(ev.metrics)
        log.info("step %d of %d  %s%s", step, self.steps, info, headline)  # train.log tells the run's story
        return headline

    def write_offloaded(self, results) -> None:
        for result in results:
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
        checkpoint.save(self.run_dir / checkpoint.NAME, self.exp, at_step, state, self.summary.config)

    def finish(self) -> GanlabError | None:
        """Complete the summary; for a completed run write samples.npz and the final checkpoint.
        Returns the error of a final save that failed (a full disk), to raise once the summary is out."""
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
