"""`run(cfg)`: train one GAN, or N seeds of one (replicas=N), as the config says; evaluate; write run directories.

Read `run` top to bottom: skip a completed run, set up (ganlab/gan.py builds; a checkpoint
restores), then `train_loop`, one flat loop whose step is, in order: the update (its learning rates from
ganlab/schedule.py, then ganlab/step.py: the D phase, n_critic D updates, then the G phase and G's moving
average, ganlab/ema.py), the log tick, the evaluation tick (G's average beside G), the checkpoint
tick; then each run's summary (ganlab/summary.py). The loop knows no loss and no remedy by name: the
update calls the loss object and the remedy hooks.

The update is one object behind one interface (step.Update): a plain run's (`PlainUpdate`), or for
replicas=N the vectorised update of seeds seed..seed+N-1 at once (ganlab/replicas.py `Replicas`),
each replica set up as the separate run of its seed would be and keeping its own ticks, evaluations,
checkpoints and summary in its own run directory (`RunState`). The checkpoint policy, the status
and exception handling and the phase order are the same for both, written once.
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
from torch import Tensor

from ganlab import checkpoint, provenance, replicas
from ganlab import threads as cpu_threads
from ganlab.atomic import write_atomic
from ganlab.config import REPLICATE_ROLES, keys_with, remedy_label, resolve_device, validate
from ganlab.errors import ConfigError, GanlabError
from ganlab.evaluation import Evaluation, Evaluator, eval_seed, make_evaluator, scalars
from ganlab.evaluation.jobs import AverageJob
from ganlab.evaluation.worker import OffloaderView, SharedOffloader
from ganlab.gan import (
    GAN,
    auto_checkpoint,
    build,
    restore,
    seed_everything,
)
from ganlab.metrics import REFERENCES
from ganlab.runlock import RunLock
from ganlab.schedule import Schedule
from ganlab.speed import Speed
from ganlab.step import PlainUpdate, StepResult, Update, take_step
from ganlab.summary import RunSummary
from ganlab.tracking import Tracker, command_line_hparams, finite_or_none

log = logging.getLogger(__name__)

# Keys a resume=auto re-run may change without making a completed run a different one (config.Role).
AUTO_RESUME_IGNORED = keys_with(*REPLICATE_ROLES)


class Diverged(GanlabError):
    exit_code = 3


class Interrupted(GanlabError):
    """SIGINT or SIGTERM: the run saved its state and stopped; exit status 128 + the signal's number."""

    def __init__(self, signum: int, step: int, run_dir: Path):
        self.exit_code = 128 + signum
        self.signum, self.step, self.run_dir = signum, step, Path(run_dir)
        super().__init__(f"interrupted by {signal.Signals(signum).name} after step {step}; its checkpoint is "
                         f"saved: continue with `ganlab train resume={run_dir}`")

    def in_sweep(self, command: str) -> str:
        """The line for a job of a sweep: `command` continues the whole sweep (its own plus resume=auto)."""
        return (f"interrupted by {signal.Signals(self.signum).name} after step {self.step} of {self.run_dir.name}; "
                f"its checkpoint is saved: continue the whole sweep with `{command}` (its completed jobs are "
                "skipped, this one resumes, the rest start)")


# --- run --------------------------------------------------------------------------------------------------

def run(cfg: DictConfig, run_dir: str | Path, labels: dict | None = None, progress: bool | None = None) -> dict:
    """Train one GAN as `cfg` says; write events, pictures, checkpoint, samples and summary.json
    into `run_dir`; return the summary (as summary.json holds it). A diverged run still writes its
    summary. The run directory is locked while the run trains: a second run into it is refused.

    replicas=N: seeds seed..seed+N-1 trained together, each step vectorised over them. Replica k
    writes the run directory a separate run of seed+k would, as `run_dir/seed_<seed+k>/`, and resumes
    from its own checkpoint (resume=auto, or resume=run_dir); run_dir holds no summary.json of its
    own, so a report finds N runs. Returns {"replicas": [each replica's summary]}."""
    validate(cfg)
    run_dir = Path(run_dir)
    grouped = cfg.replicas > 1
    if grouped:
        replicas.check(cfg, build(cfg, torch.device("cpu")))  # refused in one line before anything is written
    configs = replicas.replica_configs(cfg) if grouped else [cfg]
    dirs = [replicas.replica_dir(run_dir, c.seed) for c in configs] if grouped else [run_dir]
    labels = run_labels(cfg, labels)
    summaries: dict[Path, dict] = {}
    with contextlib.ExitStack() as held:
        earlier = set()  # the directories an earlier start of their run had written into
        for path in dict.fromkeys([run_dir, *dirs]):
            path.mkdir(parents=True, exist_ok=True)
            if held.enter_context(RunLock(path)).started_before:
                earlier.add(path)
        todo = []  # (config, run directory, resolved config) of each run still to train
        for one, path in zip(configs, dirs):
            config = OmegaConf.to_container(one, resolve=True)
            done = completed_run(one, path, config)
            if done is None:
                todo.append((one, path, config))
            else:
                summaries[path] = done.to_dict()
        if todo:
            summaries.update(train(cfg, run_dir, todo, labels, progress, held, earlier))
    finished = [summaries[path] for path in dirs]
    diverged = [(path, s) for path, s in zip(dirs, finished) if s.get("status") == "diverged"]
    if not grouped:
        if diverged:
            raise Diverged(f"run diverged at step {finished[0].get('step')}: {finished[0].get('error')}; "
                           f"see {run_dir / 'summary.json'}")
        return finished[0]
    if diverged:
        raise Diverged(f"{len(diverged)} of {cfg.replicas} replicas diverged: see the summary.json in "
                       f"{', '.join(str(path) for path, _ in diverged)}")
    return {"replicas": finished}


def train(cfg: DictConfig, run_dir: Path, todo: list[tuple[DictConfig, Path, dict]], labels: dict,
          progress: bool | None, held: contextlib.ExitStack, earlier: set[Path] = frozenset()) -> dict[Path, dict]:
    """Set up each run of `todo` (built afresh, or restored from its checkpoint), make the update that
    trains them (one plain run, or the replicas vectorised), and train them in `train_loop`; return each
    run's summary by run directory. `earlier`: the directories an earlier start of their run wrote into."""
    grouped = cfg.replicas > 1
    device = resolve_device(cfg.device)
    threads = cpu_threads.apply(cfg.cpu_threads, cfg.eval.background) if device.type == "cpu" else 0
    # Started first: the worker imports while the runs build, then takes the reference rows' offline part.
    offloader = held.enter_context(contextlib.closing(SharedOffloader(cfg.eval.background, len(todo))))
    setups, streams, resumed = [], [], []
    for k, (one, path, config) in enumerate(todo):
        if grouped:
            replicas.write_record(run_dir, path, one.seed)
        resume = resume_checkpoint(one, path, grouped)
        if resume is None and one.resume and path in earlier:  # resume=auto (or resume=DIR) of a run killed early
            log.info("%s holds no checkpoint (its run stopped before the first): starting it again from step 0 "
                     "with the config it was started with", path)
        setups.append(set_up(one, path, labels, config, device, resume, offloader.view(k)))
        if grouped:
            setups[-1].summary.replica = {"index": one.seed - cfg.seed, "of": cfg.replicas, "first_seed": cfg.seed}
            streams.append(replicas.training_stream(device))  # what the run of this seed draws from next
        resumed += [resume] if resume else []
        setups[-1].summary.cpu_threads = threads or None
    start_step = replicas.same_step({s.run_dir.name: s.start_step for s in setups})
    speed = Speed(cfg.speed, device)
    for s in setups:
        speed.prepare(s.exp.G, s.exp.D)
    if grouped:
        if resumed:
            replicas.restore_shared(checkpoint.read(resumed[0])["rng"], device)
        else:
            replicas.seed_shared(cfg.seed, cfg.replicas)
        update: Update = replicas.Replicas([s.exp for s in setups], streams, cfg.batch_size, device, speed)
    else:
        update = PlainUpdate(setups[0].exp, cfg.batch_size, speed)
    runs = [RunState(s, held.enter_context(s.tracker(progress if k == 0 else False)), offloader.view(k), update,
                     index=k if grouped else None, start_step=start_step, device=device)
            for k, s in enumerate(setups)]
    checkpoints = CheckpointPolicy(cfg.checkpoint.every, offloader, written=start_step > 0)
    rates = Schedule.of(cfg, update.optimizers())  # optim.schedule, optim.warmup (ganlab/schedule.py)
    return train_loop(cfg, update, runs, checkpoints, start_step, held.enter_context(StopRequest()), run_dir, rates)


def resume_checkpoint(cfg: DictConfig, run_dir: Path, grouped: bool) -> Path | None:
    """The checkpoint a run resumes from: its own (resume=auto), the one resume=PATH names (for a replica,
    its own seed's below PATH), or None (a fresh run)."""
    if cfg.resume == "auto":
        return auto_checkpoint(run_dir)
    if not cfg.resume:
        return None
    return checkpoint.find(replicas.replica_dir(cfg.resume, cfg.seed) if grouped else cfg.resume)


# --- the loop ---------------------------------------------------------------------------------------------

def train_loop(cfg: DictConfig, update: Update, runs: list[RunState], checkpoints: CheckpointPolicy,
               start_step: int, stop: StopRequest, run_dir: Path, rates: Schedule) -> dict[Path, dict]:
    """Train `runs` from `start_step` to cfg.steps. A run that diverges stops ticking (a replica's
    siblings train on; its last periodic checkpoint is kept: the last good state); a signal checkpoints
    every live run and stops. Each run's summary, completed or not, is written at the end. `rates`: the
    learning rates of each step."""
    steps, eval_every, log_every = cfg.steps, cfg.eval.every, cfg.log.every  # plain ints: a DictConfig read costs ~18 us
    live = list(runs)
    try:
        for step in range(start_step + 1, steps + 1):
            # The update: the step's learning rates, each remedy learns the step (its schedules), then the D
            # phase and the G phase of every live run (and G's moving average). Its losses stay on the device:
            # no host sync until a log tick.
            rates.set(step)
            for r in live:
                r.exp.remedy.begin_step(step)
            eval_now = step % eval_every == 0 or step == steps
            log_now = eval_now or step % log_every == 0
            result = take_step(update, log_now)
            for r in list(live):
                try:
                    r.record(step, result)
                    if log_now:
                        # The log tick: the mean losses since the last one (the loop's host sync), the gradient
                        # norms, and whatever W1/W2 and pictures the evaluation worker has finished.
                        info = r.log_tick(step, result)
                        # The evaluation tick: this step's metrics and samples (pictures, W1/W2 to the worker).
                        headline = r.evaluate(step, info) if eval_now else None
                        r.tracker.advance(step, info, headline)  # between evaluations the bar keeps the last one
                except Diverged as exc:  # this run stops; a replica's siblings train on
                    r.diverged(step, exc)
                    live.remove(r)
            # The checkpoint tick: periodic (one policy for every run: replicas resume from one step), and on
            # a signal. The final checkpoint is written with the samples, by `RunState.finish`.
            if step < steps and (stop.signum is not None or checkpoints.due(step)):
                for r in list(live):
                    try:
                        r.save_state(step)
                    except Diverged as exc:  # found before its checkpoint: the one on disk stays the last good one
                        r.diverged(step, exc)
                        live.remove(r)
                if stop.signum is not None:
                    raise Interrupted(stop.signum, step, run_dir)
            if not live:
                break
        for r in live:
            r.write_offloaded(r.offloader.drain())
            r.summary.status = "completed"
    except Interrupted as exc:
        for r in live:
            r.summary.status, r.summary.error = "interrupted", str(exc)
        raise
    except BaseException as exc:
        for r in live:
            r.summary.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        unsaved = [r.finish() for r in runs]
        for r in runs:
            r.tracker.finish(r.summary.to_dict())
    for error in unsaved:  # a final save that failed (a full disk): raised once every summary is out
        if error is not None:
            raise error
    return {r.run_dir: finite_or_none(r.summary.to_dict()) for r in runs}  # null, not NaN, as summary.json holds it


class CheckpointPolicy:
    """When the periodic checkpoint is written, for every run of the loop at once. It is owed every
    `every` steps. The run's first one is written when due, whatever the evaluation worker is doing: until
    then a kill loses the whole run. Each later one is written at the first step from its due step on at
    which the worker has no job in hand: a checkpoint holds every evaluation's results, so one written
    while the worker computes the same step's W1/W2 and pictures would stall training for that whole job
    (about 10 % of the default run in one profile on a busy machine, docs/benchmarks.md). At most `every`
    steps late, then it waits. Inline evaluation (eval.background=false) is never busy: checkpoints fall
    on the multiples. `written`: the run has a checkpoint already (a resumed run)."""

    def __init__(self, every: int, offloader: SharedOffloader, written: bool = False):
        self.every, self.offloader, self.written = every, offloader, written
        self.owed: int | None = None  # the step a periodic checkpoint has been owed since

    def due(self, step: int) -> bool:
        if step % self.every == 0 and self.owed is None:
            self.owed = step
        if self.owed is None:
            return False
        if self.written and self.offloader.busy() and step - self.owed < self.every:
            return False
        self.owed, self.written = None, True
        return True


def run_labels(cfg: DictConfig, labels: dict | None) -> dict:
    # Hydra records no choice for a list (`remedy=[a,b]`): keep our own label where it gives None.
    return {**default_labels(cfg), **{k: v for k, v in (labels or {}).items() if v is not None}}



@dataclass
class SetUp:
    """A run built (or restored) and ready for its first step."""

    cfg: DictConfig
    run_dir: Path
    exp: GAN
    evaluator: Evaluator
    summary: RunSummary
    start_step: int
    state: dict  # the loop's bookkeeping from the checkpoint ({} for a fresh run)

    def tracker(self, progress: bool | None) -> Tracker:
        labels, cfg = self.summary.labels, self.cfg
        hparams = command_line_hparams(cfg, {"dataset": labels["dataset"], "loss": labels["loss"],
                                             "remedy": labels["remedy"], "seed": cfg.seed, "steps": cfg.steps,
                                             "batch_size": cfg.batch_size})  # and every key overridden
        # On resume, TensorBoard drops what the first segment logged after the checkpoint's step. A fresh
        # start into a directory that already holds events (resume=auto after a run stopped before its first
        # checkpoint) drops them all, from step 0: the step-0 reference rows are logged once, by this run.
        if self.start_step:
            purge_step = self.start_step + 1
        else:
            purge_step = 0 if next(self.run_dir.glob("events.out.tfevents.*"), None) is not None else None
        return Tracker(self.run_dir, cfg.steps, hparams, self.evaluator.metric_keys, progress=progress,
                       purge_step=purge_step)


def set_up(cfg: DictConfig, run_dir: Path, labels: dict, config: dict, device: torch.device,
           resume: Path | None, offloader: OffloaderView | None = None) -> SetUp:
    """Seed, build, then measure the reference rows (a fresh run) or restore the checkpoint `resume`:
    the start of a run, and of each replica of replicas=N, which thus starts as the run of its seed.
    With the run's `offloader`, the rows' offline metrics arrive through it (RunState.write_offloaded)."""
    seed_everything(cfg.seed)
    summary = RunSummary(step=0, run_dir=str(run_dir), labels=labels, seed=cfg.seed, device=str(device),
                         config=config, provenance=provenance.gather())
    exp, evaluator, references = start(cfg, device, run_dir, summary, resume is None, offloader)
    start_step, state = (0, {}) if resume is None else restore(resume, exp, cfg, config)
    if resume is not None:  # the run's original provenance stays; this segment's joins resumed_provenance
        summary.provenance, summary.resumed_provenance = provenance.on_resume(state, summary.provenance, start_step)
    summary.references = references or dict(state.get("references", {}))
    summary.n_modes, summary.protocol = evaluator.n_modes, evaluator.protocol()
    threads = torch.get_num_threads()  # as cpu_threads set them (ganlab/threads.py)
    on = f"device {device}" + (f", {threads} torch thread{'s' if threads > 1 else ''}" if device.type == "cpu" else "")
    log.info("run directory: %s (%s)%s", run_dir, on, f"; resumed from step {start_step}" if start_step else "")
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
          fresh: bool, offloader: OffloaderView | None = None) -> tuple[GAN, Evaluator, dict]:
    """Build the experiment and its evaluator, and (for a fresh run) measure the reference rows on
    the untrained G. A fresh run that fails here leaves a summary saying so, for the sweep's report."""
    try:
        exp = build(cfg, device)
        evaluator = make_evaluator(exp.data, exp.latent_dim, cfg.eval, exp.loss.wasserstein_critic, device, cfg.metrics)
        return exp, evaluator, measure_references(evaluator, exp, cfg.seed, offloader) if fresh else {}
    except BaseException as exc:
        if fresh:  # a resumed run keeps the summary it has
            failed = RunSummary(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                                error=str(exc), labels=summary.labels, seed=summary.seed, config=summary.config,
                                provenance=summary.provenance)
            with contextlib.suppress(GanlabError):  # a full disk must not hide the error that got us here
                failed.write(run_dir)
        raise


def measure_references(evaluator: Evaluator, exp: GAN, seed: int, offloader: OffloaderView | None = None) -> dict:
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


# --- one run's state and ticks ---------------------------------------------------------------------------

class RunState:
    """What the loop keeps for one run between steps (its losses since the last log tick, every
    evaluation's numbers, the time), that run's ticks (log, evaluation, checkpoint) and its summary at
    the end. A checkpoint's `loop` entry restores it (`state`), so a resumed run continues
    bit-identically. `index`: which replica of the update's stacked ones this run is (None: the plain
    update's one run, whose step results are its own)."""

    def __init__(self, setup: SetUp, tracker: Tracker, offloader: OffloaderView, update: Update, index: int | None,
                 start_step: int, device: torch.device):
        cfg, state = setup.cfg, setup.state
        self.exp, self.evaluator, self.tracker, self.offloader = setup.exp, setup.evaluator, tracker, offloader
        self.update, self.index = update, index
        self.run_dir, self.summary, self.start_step, self.step = setup.run_dir, setup.summary, start_step, start_step
        self.steps, self.seed = cfg.steps, cfg.seed
        # Evaluation draws from its own RNG, reseeded from (seed, step) at each eval: the eval cadence
        # never changes the training trajectory, nor the samples an eval at a given step draws.
        self.eval_rng = torch.Generator(device)
        self.evaluator.load_state_dict(state)
        # Every evaluation's scalars, for the convergence figures of `ganlab report` (step -> metrics).
        self.metric_history: dict[int, dict] = {int(k): dict(v) for k, v in state.get("metric_history", {}).items()}
        self.final_extra: dict = dict(state.get("final_extra", {}))  # offloaded metrics (W1, W2) of the latest evaluation
        # Detached losses since the last log tick: appending costs no kernel and no host sync.
        self.recent_d = [torch.tensor(v, device=device) for v in state.get("recent_d", [])]
        self.recent_g = [torch.tensor(v, device=device) for v in state.get("recent_g", [])]
        self.wall_before = float(state.get("wall_seconds", 0.0))  # earlier segments of a resumed run
        self.started = time.perf_counter()
        self.last: Evaluation | None = None
        self.last_ema: Evaluation | None = None  # the latest evaluation of G's moving average (ema.decay)
        self.label = "" if index is None else f"[{self.run_dir.name}] "  # which replica speaks in a log line
        tracker.advance(start_step, "")
        # What made this segment (the start, or a resume at its step), in TensorBoard's Text tab.
        tracker.text("provenance", provenance.markdown((self.summary.resumed_provenance or [self.summary.provenance])[-1]),
                     start_step)
        if not start_step:  # once per run, at step 0; a resumed run logged them in its first segment
            tracker.scalars(0, {f"reference/{name}/{k}": v for name, metrics in self.summary.references.items()
                                for k, v in metrics.items()})

    def own(self, value: Tensor) -> Tensor:
        """This run's entry of a step result (a replicas update gives one per replica)."""
        return value if self.index is None else value[self.index]

    def record(self, step: int, result: StepResult) -> None:
        """This run's losses of the step, kept on the device until the log tick."""
        self.step = step
        self.recent_d.extend(self.own(d) for d in result.d_losses)
        self.recent_g.append(self.own(result.g_loss))

    def diverged(self, step: int, exc: Diverged) -> None:
        self.summary.status, self.summary.diverged_step, self.summary.error = "diverged", step, str(exc)

    def log_tick(self, step: int, result: StepResult) -> str:
        """The only host syncs of the loop are here and in the evaluation. The step's gradient norms: D's
        after its last update, G's after the G update. Returns the losses' line for the log."""
        d_mean, g_mean = torch.stack([torch.stack(self.recent_d).mean(), torch.stack(self.recent_g).mean()]).tolist()
        self.recent_d.clear()
        self.recent_g.clear()
        if not (np.isfinite(d_mean) and np.isfinite(g_mean)):
            raise Diverged(f"the losses became non-finite (D {d_mean}, G {g_mean})")
        self.tracker.scalars(step, {"loss/d": d_mean, "loss/g": g_mean, "grad_norm/d": self.own(result.d_grad).item(),
                                    "grad_norm/g": self.own(result.g_grad).item()})
        self.write_offloaded(self.offloader.ready())
        return f"D {d_mean:.3f}  G {g_mean:.3f}"

    def evaluate(self, step: int, info: str) -> str:
        self.update.sync(self.index or 0)  # a replica's slice of the stacked networks into its own
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
        averaged = "" if self.exp.ema is None else self.evaluate_average(step)
        headline = self.evaluator.headline(ev.metrics)
        log.info("%sstep %d of %d  %s%s%s", self.label, step, self.steps, info, headline, averaged)  # train.log tells the run's story
        return headline

    def evaluate_average(self, step: int) -> str:
        """G's moving average (ema.decay) on G's codes of this step, beside G: `ema/` metrics and its samples'
        picture (ema/samples; not its W1/W2 and MMD: ganlab/evaluation/jobs.py AverageJob). Its train.log part."""
        self.eval_rng.manual_seed(eval_seed(self.seed, step))
        self.last_ema = self.evaluator.evaluate(self.exp.ema.G, self.exp.D, self.exp.remedy, self.eval_rng)
        averaged = {f"ema/{k}": v for k, v in scalars(self.last_ema).items()}
        self.tracker.scalars(step, averaged)
        self.metric_history[step].update(averaged)
        self.offloader.submit(AverageJob(self.evaluator.job(step, self.last_ema)))
        return f"  (ema:{self.evaluator.headline(self.last_ema.metrics)})"

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
            if result.scalars:  # a ReferenceJob's result has none: no empty step-0 entry in the history
                self.metric_history.setdefault(result.step, {}).update(result.scalars)

    def save_state(self, at_step: int) -> None:
        """The full state after `at_step`: what a resume needs to continue bit-identically. Only a
        good state is saved: losses that turned non-finite since the last log tick, or weights that
        blew up while the losses stayed finite, stop the run here, so the checkpoint on disk stays
        the last good one."""
        if self.recent_d and not bool(torch.isfinite(torch.stack(self.recent_d + self.recent_g)).all()):
            raise Diverged(f"the losses became non-finite (found at step {at_step}, before its checkpoint)")
        self.update.sync(self.index or 0, optimizers=True)
        problem = checkpoint.unhealthy(self.exp)
        if problem is not None:
            raise Diverged(f"{problem} (found at step {at_step}, before its checkpoint)")
        self.write_offloaded(self.offloader.drain())  # the pending W1/W2 and pictures belong to steps <= at_step
        state = {**self.evaluator.state_dict(), "final_extra": self.final_extra,
                 "metric_history": self.metric_history, "references": self.summary.references,
                 "recent_d": [float(v) for v in self.recent_d], "recent_g": [float(v) for v in self.recent_g],
                 "wall_seconds": self.wall_before + time.perf_counter() - self.started,
                 "provenance": self.summary.provenance, "resumed_provenance": self.summary.resumed_provenance}
        self.tracker.flush()  # TensorBoard up to the checkpoint on disk first: a kill -9 loses nothing before it
        # The RNG states a resume continues from: the global ones for a plain run, a replica's own stream
        checkpoint.save(self.run_dir / checkpoint.NAME, self.exp, at_step, state, self.summary.config,
                        self.update.rng_state(self.index or 0))

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
        if self.last_ema is not None:
            s.metrics_ema = scalars(self.last_ema)
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
