"""`run(cfg)`: build everything from the config, train, evaluate, write the run directory.

Read it top to bottom: build -> loop (D phase x n_critic, G phase, log tick, eval tick) -> finish.
The loop knows no loss and no remedy by name: it calls the loss object and the remedy hooks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ganlab import checkpoint
from ganlab.atomic import write_atomic
from ganlab.config import remedy_label, resolve_device, validate
from ganlab.errors import ConfigError, GanlabError
from ganlab.evaluation import Evaluation, make_evaluator, scalars
from ganlab.losses import Loss, check_penalty_fits
from ganlab.metrics import REFERENCES
from ganlab.offload import Offloader
from ganlab.remedies import Remedy
from ganlab.remedies.base import NetworkFactory
from ganlab.remedies.stack import combine
from ganlab.runlock import RunLock
from ganlab.speed import Speed
from ganlab.tracking import Tracker, finite_or_none, write_json_atomic

log = logging.getLogger(__name__)


class Diverged(GanlabError):
    exit_code = 3


@dataclass
class Experiment:
    """Everything built from the config, before any step is taken."""

    data: object
    loss: Loss
    remedy: Remedy
    G: nn.Module
    D: nn.Module
    g_opt: torch.optim.Optimizer
    d_opt: torch.optim.Optimizer
    latent_dim: int
    # The remedy's extra networks (an encoder, a second D): name -> module, its optimizer, its side.
    extras: dict[str, nn.Module] = field(default_factory=dict)
    extra_opts: dict[str, torch.optim.Optimizer] = field(default_factory=dict)
    extra_sides: dict[str, str] = field(default_factory=dict)

    def optimizers(self, side: str) -> list[torch.optim.Optimizer]:
        """The optimizers stepped in the D phase ("d") or the G phase ("g")."""
        main = self.d_opt if side == "d" else self.g_opt
        return [main, *(self.extra_opts[name] for name, s in self.extra_sides.items() if s == side)]

    def networks(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D, **self.extras}


def _instantiate(node: DictConfig, key: str, *args, **kwargs):
    """instantiate() (then, for a `_partial_` node, the call with `args`), with a bad value
    surfaced as one line naming the config key. Our targets raise ConfigError; third-party ones
    (torch.optim, nn layers) raise ValueError or TypeError, e.g. Adam with betas=[2, 0.9]."""
    try:
        made = instantiate(node, **kwargs)
        return made(*args) if args else made
    except InstantiationException as exc:
        if isinstance(exc.__cause__, GanlabError) and not isinstance(exc.__cause__, ConfigError):
            raise exc.__cause__ from None  # a missing or corrupt data file: its own one-line message
        if isinstance(exc.__cause__, (ConfigError, ValueError, TypeError)):
            raise ConfigError(f"{key}: {str(exc.__cause__).splitlines()[0]}") from None
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}") from None


def build(cfg: DictConfig, device: torch.device) -> Experiment:
    """Everything a run needs, from the config. The CLI also calls it on the CPU for every job of a
    sweep before the first starts, so bad values fail at once; keep construction cheap (datasets
    that read files should read them lazily)."""
    data = _instantiate(cfg.dataset, "dataset", device=device)
    # cfg.remedy maps each chosen remedy's name to its config (`remedy=[pacgan,spectral_norm]`).
    remedy = combine({name: _instantiate(node, f"remedy.{name}") for name, node in cfg.remedy.items()})
    loss = _instantiate(cfg.loss, "loss")
    remedy.check(loss, cfg.batch_size)
    loss = remedy.adapt_loss(loss)
    latent_dim = cfg.model.latent_dim
    make = NetworkFactory(lambda **kw: _instantiate(cfg.model.g, "model.g", **kw),
                          lambda **kw: _instantiate(cfg.model.d, "model.d", **kw),
                          lambda **kw: _make_encoder(cfg, **kw), latent_dim, data.shape)
    G, D = remedy.build(make.G(), make.D(), make)
    check_penalty_fits(loss, D)
    G, D = G.to(device), D.to(device)
    g_opt = _instantiate(cfg.optim.g, "optim.g", G.parameters())
    d_opt = _instantiate(cfg.optim.d, "optim.d", D.parameters())
    exp = Experiment(data, loss, remedy, G, D, g_opt, d_opt, latent_dim)
    for name, (module, side) in remedy.extra_networks().items():
        if side not in ("g", "d"):  # a programming error in a remedy, not a user's: say which
            raise ValueError(f"remedy network {name!r}: side must be 'g' or 'd', got {side!r}")
        exp.extras[name] = module.to(device)
        exp.extra_sides[name] = side
        exp.extra_opts[name] = _instantiate(cfg.optim[side], f"optim.{side}", module.parameters())
    remedy.prepare(g_opt, d_opt, cfg.steps)
    return exp


def _make_encoder(cfg: DictConfig, **kwargs) -> nn.Module:
    node = OmegaConf.select(cfg, "model.encoder")
    if node is None:
        raise ConfigError("the chosen remedy adds an encoder, and the model config has no `encoder` entry; "
                          "add one (see configs/model/mlp.yaml)")
    return _instantiate(node, "model.encoder", **kwargs)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


class Interrupted(GanlabError):
    """SIGINT or SIGTERM: the run saved its state and stopped; exit status 128 + the signal's number."""

    def __init__(self, signum: int, step: int, run_dir: Path):
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name} after step {step}; its checkpoint is "
                         f"saved: continue with `ganlab train resume={run_dir}`")


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


def _completed_summary(run_dir: Path) -> dict | None:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("status") == "completed" else None


def auto_checkpoint(run_dir: Path) -> Path | None:
    """resume=auto: the run directory's own checkpoint, if it has one (else the run starts afresh)."""
    path = run_dir / checkpoint.NAME
    return path if path.is_file() else None


def restore(path: Path, exp: Experiment, cfg: DictConfig, config: dict) -> tuple[int, dict]:
    """Load a checkpoint into a freshly built experiment for a resume: networks, optimizers and
    RNG states; return its step and the loop's bookkeeping. Refuse a checkpoint whose config differs
    in more than run-length keys, unless resume_force=true."""
    state = checkpoint.read(path)
    if "config" not in state or "rng" not in state:
        raise GanlabError(f"checkpoint {path} holds no RNG state or config (written before full-state checkpoints); "
                          "it can be evaluated (`ganlab eval`) but not resumed")
    differ = checkpoint.differing_keys(json.loads(state["config"]), config)
    if differ and not cfg.resume_force:
        shown = ", ".join(differ[:8]) + (f" and {len(differ) - 8} more" if len(differ) > 8 else "")
        raise ConfigError(f"resume: the config differs from the checkpoint's in {shown}; resume with the same "
                          "settings, or add resume_force=true")
    checkpoint.load_into(state, exp, path)
    step = int(state["step"])
    if step >= cfg.steps:
        raise ConfigError(f"resume: {path} is at step {step}, and steps={cfg.steps}: nothing left to train "
                          "(raise steps to train on)")
    checkpoint.set_rng_state(state["rng"])
    return step, state["loop"]


def eval_seed(seed: int, step: int) -> int:
    """The seed of the evaluation RNG at `step`: an evaluation of a step always draws the same samples."""
    return seed * 1_000_003 + step


def measure_references(evaluator, exp: Experiment, seed: int) -> dict:
    """The evaluator's reference rows for the freshly built (untrained) G. They draw from an RNG of
    their own (the evaluation seed of step 0, which no evaluation uses), and every global RNG is put
    back afterwards: measuring them never changes the training trajectory."""
    saved = checkpoint.rng_state()
    try:
        rng = torch.Generator(next(exp.G.parameters()).device).manual_seed(eval_seed(seed, 0))
        return evaluator.references(exp.G, exp.D, exp.remedy, rng)
    finally:
        checkpoint.set_rng_state(saved)


def reference_headlines(evaluator, references: dict) -> str:
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


def grad_norm(module: nn.Module) -> torch.Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def default_labels(cfg: DictConfig) -> dict:
    """Short names of the chosen group options, from their targets (the CLI passes Hydra's choices)."""
    labels = {group: str(OmegaConf.select(cfg, f"{group}._target_", default=group)).rsplit(".", 1)[-1].lower()
              for group in ("dataset", "loss")}
    return {**labels, "remedy": remedy_label(cfg.remedy)}


def run(cfg: DictConfig, run_dir: str | Path, labels: dict | None = None,
        progress: bool | None = None) -> dict:
    """Train one GAN as `cfg` says; write events, pictures, checkpoint, samples and summary.json
    into `run_dir`; return the summary. A diverged run still writes its summary. The run directory
    is locked while the run trains: a second run into it is refused."""
    validate(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        return _run(cfg, run_dir, labels, progress)


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


# Keys a resume=auto re-run may change without making a completed run a different one.
AUTO_RESUME_IGNORED = ("resume", "resume_force", "eval.background")


def _run(cfg: DictConfig, run_dir: Path, labels: dict | None, progress: bool | None) -> dict:
    # Hydra records no choice for a list (`remedy=[a,b]`): keep our own label where it gives None.
    labels = {**default_labels(cfg), **{k: v for k, v in (labels or {}).items() if v is not None}}
    # The whole resolved config goes into summary.json: `ganlab report` groups runs by it.
    config = OmegaConf.to_container(cfg, resolve=True)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    if device.type == "cpu" and cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    if cfg.resume == "auto":  # a sweep re-run: skip what completed, resume what was interrupted
        done = _completed_summary(run_dir)
        if done is not None:
            differ = differs_from_completed(done, config)
            if differ:  # never report a run as done that is not the one asked for
                raise ConfigError(f"resume=auto: {run_dir} holds a completed run whose config differs in "
                                  f"{', '.join(differ[:5])}; choose another directory, or repeat its settings")
            if done.get("step", 0) >= cfg.steps:
                log.info("%s: already completed (step %s); skipped", run_dir, done.get("step"))
                return done
            log.info("%s: completed at step %s; training on to steps=%d", run_dir, done.get("step"), cfg.steps)
    resume = auto_checkpoint(run_dir) if cfg.resume == "auto" else checkpoint.find(cfg.resume) if cfg.resume else None
    try:
        exp = build(cfg, device)
        evaluator = make_evaluator(exp.data, exp.latent_dim, cfg.eval, exp.loss, device, cfg.metrics)
        # The reference rows, measured on this run's G before its first step (a resumed run keeps them).
        references = measure_references(evaluator, exp, cfg.seed) if resume is None else {}
    except BaseException as exc:
        # Leave a trace for the sweep's report: this run was attempted and failed at start-up (a
        # resumed run keeps the summary it has).
        if resume is None:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            with contextlib.suppress(GanlabError):  # a full disk must not hide the error that got us here
                write_json_atomic(run_dir / "summary.json", {"status": status, "step": 0, "error": str(exc),
                                                             "labels": labels, "seed": cfg.seed, "metrics": {},
                                                             "config": config, "wall_seconds": 0.0,
                                                             "steps_per_second": 0.0})
        raise
    start_step, loop = (0, {}) if resume is None else restore(resume, exp, cfg, config)
    references = references or dict(loop.get("references", {}))
    data, loss, remedy, G, D = exp.data, exp.loss, exp.remedy, exp.G, exp.D
    speed = Speed(cfg.speed, device)
    speed.prepare(G, D)
    # Evaluation draws from its own RNG, reseeded from (seed, step) at each eval: the eval cadence
    # never changes the training trajectory, nor the samples an eval at a given step draws.
    eval_rng = torch.Generator(device)

    hparams = {"dataset": labels["dataset"], "loss": labels["loss"], "remedy": labels["remedy"],
               "seed": cfg.seed, "steps": cfg.steps, "batch_size": cfg.batch_size}
    summary = {"status": "failed", "step": 0, "run_dir": str(run_dir), "labels": labels, "seed": cfg.seed,
               "device": str(device), "n_modes": evaluator.n_modes,
               "metrics": {}, "references": references, "config": config, "protocol": evaluator.protocol()}
    history_steps: list[int] = [int(s) for s in loop.get("history_steps", [])]
    history_counts: list[list[int]] = [[int(c) for c in counts] for counts in loop.get("history_counts", [])]
    # Every evaluation's scalars, for the convergence figures of `ganlab report` (step -> metrics).
    metric_history: dict[int, dict] = {int(k): dict(v) for k, v in loop.get("metric_history", {}).items()}
    last: Evaluation | None = None
    final_extra: dict = dict(loop.get("final_extra", {}))  # offloaded metrics (W1, W2) of the latest evaluation
    # Detached losses since the last log tick: appending costs no kernel and no host sync.
    recent_d: list[torch.Tensor] = [torch.tensor(v, device=device) for v in loop.get("recent_d", [])]
    recent_g: list[torch.Tensor] = [torch.tensor(v, device=device) for v in loop.get("recent_g", [])]
    wall_before = float(loop.get("wall_seconds", 0.0))  # time spent in earlier segments of a resumed run
    start = time.perf_counter()
    step = start_step
    log.info("run directory: %s (device %s)%s", run_dir, device,
             f"; resumed from step {start_step}" if start_step else "")
    if references and not start_step:
        log.info("reference rows:%s", reference_headlines(evaluator, references))

    def write_offloaded(results) -> None:
        for result in results:
            tracker.scalars(result.step, {f"metrics/{k}": v for k, v in result.scalars.items()})
            tracker.images(result.step, result.images)
            final_extra.update(result.scalars)
            metric_history.setdefault(result.step, {}).update(result.scalars)

    def save_state(at_step: int) -> None:
        """The full state after `at_step`: what a resume needs to continue bit-identically. Only a
        good state is saved: losses that turned non-finite since the last log tick, or weights that
        blew up while the losses stayed finite, stop the run here, so the checkpoint on disk stays
        the last good one."""
        if recent_d and not bool(torch.isfinite(torch.stack(recent_d + recent_g)).all()):
            raise Diverged(f"the losses became non-finite (found at step {at_step}, before its checkpoint)")
        problem = checkpoint.unhealthy(exp)
        if problem is not None:
            raise Diverged(f"{problem} (found at step {at_step}, before its checkpoint)")
        write_offloaded(offloader.drain())  # the pending W1/W2 and pictures belong to steps <= at_step
        state = {"history_steps": history_steps, "history_counts": history_counts, "final_extra": final_extra,
                 "metric_history": metric_history, "references": references,
                 "recent_d": [float(v) for v in recent_d], "recent_g": [float(v) for v in recent_g],
                 "wall_seconds": wall_before + time.perf_counter() - start}
        tracker.flush()  # TensorBoard up to the checkpoint on disk first: a kill -9 loses nothing before it
        checkpoint.save(run_dir / checkpoint.NAME, exp, at_step, state, config)

    # On resume, TensorBoard drops what the first segment logged after the checkpoint's step.
    with Tracker(run_dir, cfg.steps, hparams, evaluator.metric_keys, progress=progress,
                 purge_step=start_step + 1 if start_step else None) as tracker, StopRequest() as stop:
        offloader = Offloader(background=cfg.eval.background)
        # Plain ints: reading a DictConfig costs ~18 us, about 3 % of a step at these sizes.
        steps, batch, latent_dim = cfg.steps, cfg.batch_size, exp.latent_dim
        eval_every, log_every, n_critic = cfg.eval.every, cfg.log.every, loss.n_critic
        checkpoint_every = cfg.checkpoint.every
        # A remedy's extra networks are zeroed and stepped with the side they belong to.
        d_opts, g_opts = exp.optimizers("d"), exp.optimizers("g")
        tracker.advance(start_step, "")
        if not start_step:  # once per run, at step 0; a resumed run logged them in its first segment
            tracker.scalars(0, {f"reference/{name}/{k}": v for name, metrics in references.items()
                                for k, v in metrics.items()})
        try:
            for step in range(start_step + 1, steps + 1):
                remedy.begin_step(step)
                eval_now = step % eval_every == 0 or step == steps
                log_now = eval_now or step % log_every == 0

                # D phase: n_critic steps, each on fresh real and fake batches.
                for _ in range(n_critic):
                    real = speed.batch(data.sample(batch))
                    z = torch.randn(batch, latent_dim, device=device)
                    for opt in d_opts:
                        opt.zero_grad(set_to_none=True)
                    with speed.autocast():
                        d_loss = remedy.d_loss(G, D, loss, real, z)
                    d_loss.backward()
                    for opt in d_opts:
                        opt.step()
                    loss.after_d_step(D)
                    recent_d.append(d_loss.detach().float())  # a no-op for float32; bf16 under amp
                d_grad = grad_norm(D) if log_now else None  # before the G step adds to D's grads

                # G phase
                z = torch.randn(batch, latent_dim, device=device)
                for opt in g_opts:
                    opt.zero_grad(set_to_none=True)
                with speed.autocast():
                    g_loss = remedy.g_loss(G, D, loss, real, z)
                g_loss.backward()
                for opt in g_opts:
                    opt.step()
                recent_g.append(g_loss.detach().float())

                if log_now:
                    # Log tick: the only host syncs in the loop are here and in the eval below.
                    d_mean, g_mean = torch.stack([torch.stack(recent_d).mean(),
                                                  torch.stack(recent_g).mean()]).tolist()
                    recent_d.clear()
                    recent_g.clear()
                    if not (np.isfinite(d_mean) and np.isfinite(g_mean)):
                        raise Diverged(f"the losses became non-finite (D {d_mean}, G {g_mean})")
                    tracker.scalars(step, {"loss/d": d_mean, "loss/g": g_mean,
                                           "grad_norm/d": d_grad.item(), "grad_norm/g": grad_norm(G).item()})
                    write_offloaded(offloader.ready())
                    info = f"D {d_mean:.3f}  G {g_mean:.3f}"
                    headline = None  # between evaluations the bar keeps showing the latest one

                    if eval_now:
                        # Weights that blew up while the losses stayed finite (lr=1e30) would crash
                        # the metrics (an SVD of non-finite values): that is a divergence.
                        problem = checkpoint.unhealthy(exp)
                        if problem is not None:
                            raise Diverged(problem)
                        eval_rng.manual_seed(eval_seed(cfg.seed, step))
                        last = evaluator.evaluate(G, D, remedy, eval_rng)
                        if "mode_counts" in last.metrics:
                            history_steps.append(step)
                            history_counts.append(last.metrics["mode_counts"])
                        tracker.scalars(step, {f"metrics/{k}": v for k, v in scalars(last).items()})
                        metric_history.setdefault(step, {}).update(scalars(last))
                        offloader.submit(evaluator.job(step, last, history_steps, history_counts))
                        headline = evaluator.headline(last.metrics)
                        # One line per evaluation: train.log tells the run's story.
                        log.info("step %d of %d  %s%s", step, steps, info, headline)
                    tracker.advance(step, info, headline)

                # Periodic and on-signal checkpoints (the final one is written below, with the samples).
                if step < steps and (stop.signum is not None or step % checkpoint_every == 0):
                    save_state(step)
                    if stop.signum is not None:
                        raise Interrupted(stop.signum, step, run_dir)
            write_offloaded(offloader.drain())
            summary["status"] = "completed"
        except Diverged as exc:
            # The last periodic checkpoint is kept: it is the last good state.
            summary.update(status="diverged", diverged_step=step, error=str(exc))
        except Interrupted as exc:
            summary.update(status="interrupted", error=str(exc))
            raise
        except BaseException as exc:
            summary["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            offloader.close()
            segment = time.perf_counter() - start
            summary.update(step=step, wall_seconds=wall_before + segment,
                           steps_per_second=(step - start_step) / segment if segment > 0 else 0.0)
            if start_step:
                summary["resumed_from_step"] = start_step
            summary["protocol"] = evaluator.protocol()  # now with what evaluations learnt (the real reference's modes)
            if last is not None:
                summary["metrics"] = scalars(last)
                if summary["status"] == "completed":
                    summary["metrics"].update(final_extra)
                if "mode_counts" in last.metrics:
                    summary["mode_counts"] = last.metrics["mode_counts"]
            if history_steps:
                summary["mode_history"] = {"steps": history_steps, "counts": history_counts}
            if metric_history:
                summary["history"] = columns(metric_history)
            unsaved = None
            if summary["status"] == "completed":
                try:
                    # The final metrics are computed on exactly these samples.
                    write_atomic(run_dir / "samples.npz", lambda f: np.savez(f, **evaluator.saved_samples(last)))
                    save_state(step)
                except Diverged as exc:  # weights that blew up since the last log tick
                    summary.update(status="diverged", diverged_step=step, error=str(exc))
                except GanlabError as exc:  # a full disk: the summary says so, the old checkpoint stays
                    summary.update(status="failed", error=str(exc))
                    unsaved = exc
            tracker.finish(summary)
    if unsaved is not None:
        raise unsaved
    if summary["status"] == "diverged":
        raise Diverged(f"run diverged at step {step}: {summary['error']}; see {run_dir / 'summary.json'}")
    return finite_or_none(summary)  # as summary.json holds it: null, not NaN, for an undefined metric


def load_checkpoint(path: Path, exp: Experiment) -> int:
    """Load a checkpoint's networks and optimizers into a freshly built experiment; return its step."""
    state = checkpoint.read(path)
    checkpoint.load_into(state, exp, path)
    return int(state["step"])
