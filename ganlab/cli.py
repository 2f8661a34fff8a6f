"""`ganlab <command> [arguments]`: every command's entry point, in this one module: its arguments read,
the work handed to the module that does it, and every GanlabError turned into one line and its exit status.

- `train`: the command line goes to Hydra once (ganlab/launch.py holds the job function); Hydra composes
  each job's config once, ganlab's pre-flight checks read those configs before any work
  (ganlab/preflight.py, ganlab/sweep.py), so a typo or a bad value ends with one line naming the key,
  exit status 2, and no traceback, even in a sweep;
- `eval`: ganlab/evaluation/saved.py (a run's checkpoint, or a samples file or folder);
- `sample`: ganlab/evaluation/saved.py too (a run's checkpoint rebuilt as `eval` rebuilds it, samples drawn into a file);
- `report`: ganlab/report.py builds it, ganlab/report_output.py writes its files and figures;
- `classifier`: ganlab/metrics/classifier_training.py.
Each command imports its work when it runs: `ganlab --help` loads no torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import OmegaConfBaseException

from ganlab import provenance, runlock
from ganlab.argparsing import Parser
from ganlab.config import W_SAMPLES_PROTOCOL, check_data_root, compose_checked, explain_compose_error
from ganlab.errors import ConfigError, GanlabError, UsageError, WriteError
from ganlab.hydra_private import parse_hydra_args
from ganlab.launch import (
    check_override_values,
    logging_restored,
    missing_option_line,
    parse_overrides,
    previous_sweep,
    replace_overrides,
    restarts,
    resume_overrides,
    resume_run_dir,
    train_job,
)
from ganlab.preflight import Refused
from ganlab.streams import STDOUT, on_stdout, watched_stdout, write_error, written_file

log = logging.getLogger("ganlab")

COMMANDS = {
    "train": "train a GAN: ganlab train [group=option ...] [key=value ...]; -m sweeps comma-separated values",
    "eval": "evaluate a run again from its checkpoint: ganlab eval RUN_DIR [--samples N] [metrics.inception=true ...]; "
            "or samples made elsewhere: ganlab eval --samples FILE.npz|DIR dataset=NAME [--out DIR]",
    "sample": "draw samples from a run's checkpoint (G's moving average, if kept): ganlab sample RUN_DIR --n N "
              "--out FILE.npz|DIR [--seed 0] [--raw]",
    "report": "compare runs: ganlab report PATH [--metrics a,b] [--by key,...]; mean ± s.e. over seeds",
    "classifier": "train the mode classifier that image metrics use: ganlab classifier dataset=mnist|fashion_mnist",
}


def usage() -> str:
    lines = ["usage: ganlab <command> [overrides]", "", "commands:"]
    width = max(map(len, COMMANDS)) + 2  # the longest name and two spaces: "classifier" is 10 long
    lines += [f"  {name:<{width}}{text}" for name, text in COMMANDS.items()]
    lines += ["", "`ganlab train --help` lists the config groups and their options;",
              "`ganlab train --cfg job` prints the composed config; `ganlab --version` the version and git commit."]
    return "\n".join(lines)


def fail(message: str, code: int = 2) -> None:
    print(f"ganlab: error: {message}", file=sys.stderr)
    sys.exit(code)


def train(args: list[str]) -> None:
    """`ganlab train`: the command line goes to Hydra once, which composes each job's config once; the
    pre-flight checks run on those configs before any work (ganlab/preflight.py: a callback for a single
    run, ganlab's sweeper for a multirun), and the job function trains on them. Here only what needs no
    config: the overrides' syntax, a resume's own overrides, the sweep a resume=auto continues."""
    parsed = parse_hydra_args(args)
    if parsed.shell_completion:  # -sc install=bash|zsh, query=...: for the `ganlab` command (ganlab/completion.py)
        from ganlab import completion

        return completion.complete(list(parsed.overrides), COMMANDS)
    asks_for_help = parsed.help or parsed.hydra_help or parsed.info
    overrides = list(parsed.overrides)
    if parsed.config_dir is not None and not Path(parsed.config_dir).expanduser().is_dir():
        raise ConfigError(f"--config-dir {parsed.config_dir}: no such directory")
    if not asks_for_help:
        checked = parse_overrides(overrides)
        check_override_values(checked)
        ours = [o for o in checked if not o.get_key_element().lstrip("+~").startswith("hydra")]
        if parsed.multirun and any(o.get_key_element() == "resume" and not o.is_sweep_override()
                                   and o.value() not in (None, "null", "auto") for o in ours):
            raise ConfigError("resume=PATH continues one run: drop -m, or continue a sweep with resume=auto")
        sweeps = [o.input_line for o in ours if o.is_sweep_override()]
        if sweeps and not parsed.multirun:
            raise ConfigError(f"{sweeps[0]} is a sweep; add -m (multirun) to run one job per value")
        resumed = resume_run_dir(overrides, parsed.multirun)
        if resumed is not None:
            own = overrides
            if restarts(resumed):
                # Stopped before its first checkpoint: nothing to resume, so it starts again there from
                # step 0, as its own command plus resume=auto would (the run logs a line saying so).
                own = [*(o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "resume"), "resume=auto"]
            # The run's own overrides, then the user's resumable ones; continue in the run's
            # directory, with Hydra's record of this invocation beside the original's (.hydra/).
            overrides = [*resume_overrides(resumed, own), f"hydra.run.dir={resumed}",
                         "hydra.output_subdir=.hydra_resume"]
        if parsed.multirun and "resume=auto" in overrides and not any(o.startswith("hydra.sweep.dir=") for o in overrides):
            # The sweep this command wrote before (its jobs' configs, not its words: it had no resume=auto)
            sweep = previous_sweep([o for o in overrides if not o.startswith("hydra")], config_dir=parsed.config_dir)
            if sweep is not None:
                log.info("resume=auto: continuing the sweep in %s", sweep)
                overrides.append(f"hydra.sweep.dir={sweep}")
        if parsed.cfg:  # printing the config runs no job: its values are checked here, then Hydra prints it
            if parsed.multirun:
                raise UsageError("--cfg prints one job's config and -m runs a sweep: drop one of them")
            compose_checked([o.input_line for o in ours], parsed.config_dir)
    if parsed.hydra_help:
        # Hydra composes its own help without train.yaml: the run's overrides (loss=wgan) would be unknown keys there,
        # and ganlab's template (configs/hydra/hydra_help/ganlab.yaml) names `ganlab train` and ganlab's completion,
        # not the `ganlab-train` Hydra is told it runs
        overrides = [o for o in overrides if o.lstrip("+~").startswith("hydra")]
        if not any(o.lstrip("+~").startswith("hydra/hydra_help") for o in overrides):
            overrides.append("hydra/hydra_help=ganlab")
    sys.argv = ["ganlab-train", *replace_overrides(args, parsed.overrides, overrides)]
    # Errors outside our job function come back to us raw, instead of as Hydra's trimmed traceback: a
    # composition error or a file-system error (Hydra writing .hydra/ onto a full disk) is one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        with logging_restored():
            try:
                train_job()
            finally:  # the run directory claimed before Hydra wrote into it (launch.Claim): given up
                runlock.release()
    except Refused as exc:  # a pre-flight check of a single run's config (a Hydra callback)
        raise exc.error from None
    except MissingConfigException as exc:  # an IOError as well: an unknown option of a group
        if str(exc.missing_cfg_file or "").startswith("hydra/") or not exc.missing_cfg_file:
            raise ConfigError(missing_option_line(str(exc))) from None
        raise ConfigError(explain_compose_error(exc, overrides, parsed.config_dir)) from None
    except (ConfigCompositionException, OmegaConfBaseException) as exc:
        raise ConfigError(explain_compose_error(exc, overrides, parsed.config_dir)) from None
    except OSError as exc:  # Hydra writing .hydra/ (or a sweep's closing line) on a full disk, a full stdout
        if isinstance(exc, BrokenPipeError) and on_stdout(exc):
            raise  # the reader of our output went away: main() ends quietly
        named = write_error(exc, "; free some space or choose a writable directory (hydra.run.dir=PATH)")
        if named is not None:
            raise named from None
        raise WriteError(f"cannot write the run's files: {exc.strerror or exc}; free some space or choose a "
                         "writable directory (hydra.run.dir=PATH)") from None


def eval_parser() -> Parser:
    from ganlab.evaluation.saved import MIN_SAMPLES

    p = Parser(prog="ganlab eval", description="Evaluate a finished run again, from its checkpoint (RUN_DIR/eval.json); "
                                                "or samples made elsewhere (--samples FILE dataset=NAME).")
    p.add_argument("path", metavar="RUN_DIR", nargs="?", default=None,
                   help="a run directory (with summary.json and checkpoint.pt); none with --samples FILE")
    p.add_argument("--samples", default=None, metavar="N|FILE",
                   help=f"N: samples to draw from the run, >= {MIN_SAMPLES} (default: the run's eval.samples; W1/W2 "
                        f"take min(N, eval.w_samples) of them, and the protocol {W_SAMPLES_PROTOCOL}); FILE: a .npz "
                        "of samples made elsewhere (`images` (n, C, H, W) in [-1, 1] or uint8, or `points` (n, d)), "
                        "a .npy of that array, or a folder of PNG files, scored against dataset=NAME")
    p.add_argument("--out", default=None, metavar="FILE.json|DIR",
                   help="with --samples FILE: where the record goes (default: FILE's name with .eval.json); a folder "
                        "gets a summary.json, with the reference rows, that `ganlab report` shows beside ganlab's own "
                        "runs")
    p.add_argument("--name", default=None,
                   help="with --samples FILE: the row's label in `ganlab report` (samples=NAME; default: FILE's name); "
                        "give several seeds' files one name, each with its seed=N, for one row of seeds")
    p.add_argument("--tensorboard", default=None, metavar="DIR",
                   help="with --samples FILE: also write the metrics, reference rows and pictures as TensorBoard "
                        "events into DIR")
    p.add_argument("--device", default=None,
                   help="auto, cpu, cuda, cuda:N (the GPU of index N) or mps (default: the device the run trained on; "
                        "cpu for a file)")
    # default=[]: without a default argparse counts a nargs="*" positional as required in its errors.
    p.add_argument("overrides", nargs="*", default=[], help="how to measure: metrics.inception=true|false|auto "
                   "(Inception FID and IS), metrics.prdc_samples=10000, eval.batch=500, ...; with --samples FILE, "
                   "dataset=NAME and its keys (dataset.root=DIR)")
    return p


def _sample_count(value: str | None) -> int | None:
    """--samples as a count, or None when it names a file."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _device(name: str | None) -> str | None:
    """--device checked as every command's device is (ganlab/devices.py: auto, cpu, cuda, cuda:N, mps), in one line
    naming what this machine has; auto becomes the device it picks. None: the command's default."""
    if name is None:
        return None
    from ganlab.devices import resolve_device

    return str(resolve_device(name, "--device "))


@contextlib.contextmanager
def warnings_on_stderr():
    """Warnings (log.warning) as `ganlab: warning: ...` lines on stderr, for the commands without a Hydra job to
    set up logging (eval, report). Removed afterwards: main() may run inside another program (the tests)."""
    warnings = logging.StreamHandler(sys.stderr)
    warnings.setLevel(logging.WARNING)
    warnings.setFormatter(logging.Formatter("ganlab: warning: %(message)s"))
    logging.getLogger("ganlab").addHandler(warnings)
    try:
        yield
    finally:
        logging.getLogger("ganlab").removeHandler(warnings)


def evaluate(argv: list[str]) -> None:
    """`ganlab eval`: a run again from its checkpoint, or a file of samples (ganlab/evaluation/saved.py)."""
    from ganlab.evaluation.saved import evaluate_run, evaluate_samples_file

    # intermixed: `ganlab eval RUN_DIR --samples N metrics.inception=true` (overrides after an option) parses too.
    args = eval_parser().parse_intermixed_args(argv)
    with warnings_on_stderr():
        if args.samples is not None and _sample_count(args.samples) is None:
            # A file of samples: `path` took the first override (dataset=NAME), if any.
            if args.path is not None and "=" not in args.path:
                raise UsageError(f"--samples {args.samples} scores a file; leave out the run directory {args.path} "
                                 "and name the dataset (dataset=NAME)")
            overrides = [*([args.path] if args.path else []), *args.overrides]
            record = evaluate_samples_file(args.samples, overrides, _device(args.device), args.out, args.name,
                                           args.tensorboard)
            closing = f"{record['samples']} samples of {args.samples} against {record['dataset']}; wrote {record['written_to']}"
        else:
            if args.path is None:
                raise UsageError("ganlab eval needs a run directory (ganlab eval RUN_DIR), or a samples file and "
                                 "its dataset (ganlab eval --samples FILE.npz dataset=NAME)")
            for option in ("out", "name", "tensorboard"):
                if getattr(args, option) is not None:
                    raise UsageError(f"--{option} is for --samples FILE; a run's evaluation goes to RUN_DIR/eval.json")
            record = evaluate_run(args.path, _sample_count(args.samples), _device(args.device), args.overrides)
            averaged = " and G's moving average (ema/)" if "metrics_ema" in record else ""
            closing = f"step {record['step']}, G{averaged}; wrote {Path(args.path) / 'eval.json'}"
    # G's moving average's metrics below G's, under ema/ as training logs them (TensorBoard)
    rows = [*record["metrics"].items(), *((f"ema/{k}", v) for k, v in record.get("metrics_ema", {}).items())]
    for key, value in rows:
        print(f"{key:>28}  {value:.6g}")
    print(closing)


def sample_parser() -> Parser:
    p = Parser(prog="ganlab sample",
               description="Draw samples from a run's checkpoint, rebuilt exactly as `ganlab eval RUN_DIR` rebuilds it "
                           "(the remedy's own sampler included), and write them to a file: points as a .npz (`points`, "
                           "float32 (n, d)), images as a .npz (`images`, uint8 (n, C, H, W)) or a folder of PNG files; "
                           "a .npy holds the bare array. `ganlab eval --samples` scores such a file.")
    p.add_argument("path", metavar="RUN_DIR", help="a run directory (with summary.json and checkpoint.pt)")
    p.add_argument("--n", type=int, required=True, metavar="N", help="how many samples")
    p.add_argument("--out", required=True, metavar="FILE.npz|DIR", help="a .npz or .npy file, or a folder (PNG files)")
    p.add_argument("--seed", type=int, default=0, help="the seed of the codes and of the sampler's draws (default: 0)")
    p.add_argument("--force", action="store_true", help="replace an existing file, or the PNG files of a folder")
    p.add_argument("--raw", action="store_true",
                   help="draw from the trained G even where the run kept G's moving average (ema.decay), which is "
                        "drawn from by default")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (the GPU of index N) or mps (default: the "
                                                  "device the run trained on)")
    return p


def sample(argv: list[str]) -> None:
    """`ganlab sample RUN_DIR --n N --out FILE|DIR`: samples from the run's checkpoint (ganlab/evaluation/saved.py)."""
    from ganlab.evaluation.saved import sample_run

    args = sample_parser().parse_args(argv)
    with warnings_on_stderr():
        record = sample_run(args.path, args.n, args.out, seed=args.seed, force=args.force, device=_device(args.device),
                            raw=args.raw)
    source = (f"G's moving average (ema.decay={record['ema_decay']:g}; --raw: the trained G)"
              if record["generator"] == "G_ema" else "G")
    print(f"{record['samples']} samples ({record['array']} {tuple(record['shape'])}) of step {record['step']} from "
          f"{source}, seed {record['seed']}; wrote {record['written_to']}")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def report_parser() -> Parser:
    from ganlab.report import DEFAULT_BASELINE, DEFAULT_METRICS, METRICS

    p = Parser(prog="ganlab report",
               description="Compare the runs under PATH: group them by config (seed aside), and print "
                           "mean ± standard error over seeds of each metric, the diverged and failed "
                           "counts and the fraction of seeds that captured all modes. Also writes "
                           "report.md, report.csv and report_modes.png into PATH.")
    p.add_argument("path", metavar="PATH", help="a run directory, a multirun directory, or any folder of runs")
    p.add_argument("--metrics", metavar="A,B", type=_names,
                   help=f"metrics to show (default: {','.join(DEFAULT_METRICS)}; also: "
                        f"{','.join(m for m in METRICS if m not in DEFAULT_METRICS)})")
    p.add_argument("--baseline", metavar="KEY=VALUE",
                   help="the groups every other group is compared with: an exact permutation test over seeds, a "
                        "bootstrap interval of the difference, Benjamini-Hochberg over the report's comparisons "
                        f"(default: {'='.join(DEFAULT_BASELINE)}, where the runs have such a group and others); "
                        "each group is compared with the baseline group of its dataset that shares the most config")
    p.add_argument("--protocol", action="store_true",
                   help="also print how every number was measured and tested (always written into report.md)")
    p.add_argument("--by", metavar="KEY,KEY", type=_names,
                   help="group by these keys only, pooling runs that differ elsewhere: option names "
                        "(dataset, loss, remedy, ...) or dotted config keys (loss._target_, optim.d.lr)")
    return p


def report(argv: list[str]) -> None:
    """`ganlab report PATH`: the tables printed, report.md, report.csv and the figures written into PATH."""
    from rich.console import Console
    from rich.measure import Measurement

    from ganlab.report import build_report
    from ganlab.report_output import write_report

    args = report_parser().parse_args(argv)
    with warnings_on_stderr():  # a seed counted once, runs of different ganlab versions
        report = build_report(args.path, metrics=args.metrics, by=args.by, baseline=args.baseline)
    try:
        written = write_report(report)
    except OSError as exc:
        where = written_file(exc)
        where = f"{where} (the report in {args.path})" if where else f"the report into {args.path}"
        raise WriteError(f"cannot write {where}: {exc.strerror or exc}") from None
    tables = report.tables()
    console = Console()
    if not console.is_terminal:  # into a file or a pipe: the tables whole, not squeezed into 80 columns
        roomy = console.options.update_width(1000)
        console = Console(width=max(console.width, *(Measurement.get(console, roomy, t).maximum for t in tables)))
    for table in tables:
        console.print(table)
    if args.protocol:
        console.print(report.caption(), markup=False, highlight=False)
    else:
        console.print("how each number was measured and tested: report.md's Protocol, or --protocol",
                      markup=False, highlight=False)
    for note in report.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    console.print(f"wrote {', '.join(p.name for p in written)} into {report.root}", markup=False, highlight=False,
                  soft_wrap=True)


CLASSIFIER_HELP = """The mode classifier labels each channel of a Stacked MNIST / Stacked Fashion-MNIST sample (the
mode is the triple of labels) and gives the Domain FID its features. ganlab ships one for Fashion-MNIST, so you
need this command only to train MNIST's (about 7 minutes on 2 CPU cores, once), or one of your own; it is cached
($GANLAB_CACHE or ~/.cache/ganlab) and every later run and `ganlab eval` use it in place of the shipped one.

  dataset=NAME        mnist or fashion_mnist (required)
  epochs=N            training epochs (default: 4 for mnist, 15 for fashion_mnist)
  augment=true|false  also train on blurred, noised and low-contrast images, as generated ones are (default true:
                      the corrected mode counts are validated with it)
  force=true          train even when a classifier is cached or shipped (it is replaced)
  dataset.root=PATH   where the standard files are (default: $GANLAB_DATA or ~/.cache/ganlab/data, then
                      Debian's copy, else they are downloaded and checked)
  seed=0 device=auto|cpu|cuda|cuda:N|mps cpu_threads=0 (0: torch's default)

It trains on the full standard split only (the official files, checked by SHA-256): every run is scored with it,
so a dataset.root holding other data is refused.

  ganlab classifier dataset=mnist
  ganlab classifier dataset=fashion_mnist force=true epochs=20"""
CLASSIFIER_USAGE = ("ganlab classifier dataset=mnist|fashion_mnist [epochs=N] [seed=0] [device=auto|cpu|cuda|cuda:N|mps] "
         "[dataset.root=PATH] [cpu_threads=0] [augment=true|false] [force=true]")
_CLASSIFIER_KEYS = ("dataset", "epochs", "seed", "device", "dataset.root", "cpu_threads", "augment", "force")


def _classifier_args(argv: list[str]) -> dict:
    from ganlab.metrics.classifier import DEFAULT_AUGMENT, TARGETS

    args: dict = {"seed": 0, "device": "auto", "dataset.root": None, "cpu_threads": 0, "augment": DEFAULT_AUGMENT,
                  "force": False}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if arg in ("-h", "--help"):
            print(f"usage: {CLASSIFIER_USAGE}\n\n{CLASSIFIER_HELP}")
            sys.exit(0)
        if not sep or key not in _CLASSIFIER_KEYS:
            raise UsageError(f"{arg!r}: expected key=value with key one of {', '.join(_CLASSIFIER_KEYS)}; usage: {CLASSIFIER_USAGE}")
        if key in ("epochs", "seed", "cpu_threads"):
            try:
                args[key] = int(value)
            except ValueError:
                raise UsageError(f"{key}={value}: expected an integer")
            if args[key] < (1 if key == "epochs" else 0):
                raise UsageError(f"{key}={value}: must be >= {1 if key == 'epochs' else 0}")
        elif key in ("force", "augment"):
            if value.lower() not in ("true", "false"):
                raise UsageError(f"{key}={value}: expected true or false")
            args[key] = value.lower() == "true"
        elif key == "device":  # refused now, in one line, if this machine does not have it (ganlab/devices.py)
            from ganlab.devices import resolve_device

            resolve_device(value, "device=")
            args[key] = value
        elif key == "dataset":
            if value not in TARGETS:
                raise UsageError(f"dataset={value}: choose one of {', '.join(TARGETS)}")
            args[key] = value
        else:  # dataset.root: refused now if it is not a directory, not passed over for a system copy
            args[key] = None if value in ("", "null") else value
            check_data_root(args[key])
    if "dataset" not in args:
        raise UsageError(f"dataset= is required ({', '.join(TARGETS)}); usage: {CLASSIFIER_USAGE}")
    if args["dataset.root"] is None:  # $GANLAB_DATA then: a missing one is refused too, not passed over
        check_data_root(None)
    return args


def classifier(argv: list[str]) -> None:
    """`ganlab classifier dataset=NAME`: train the mode classifier (ganlab/metrics/classifier_training.py)."""
    import torch
    from rich import get_console
    from rich.logging import RichHandler

    from ganlab.config import resolve_device
    from ganlab.metrics.classifier import DEFAULT_EPOCHS, TARGETS, classifier_file, describe, load_classifier
    from ganlab.metrics.classifier_training import train_and_save

    args = _classifier_args(argv)
    dataset = args["dataset"]
    path = classifier_file(dataset)  # the cache's, else the one shipped with ganlab
    if path is not None and not args["force"]:
        _, info = load_classifier(dataset)
        # Asked for the other recipe than the cached one's: say so, or the user would think they got it.
        asked = "was asked for" if any(a.startswith("augment=") for a in argv) else "is the default"
        other = "" if info["augmented"] == args["augment"] else \
            f" (not augment={str(args['augment']).lower()}, which {asked})"
        if info["shipped"]:
            print(f"{describe(info)} at {path}{other}, shipped with ganlab; force=true trains one of your own into "
                  "the cache, which then replaces it")
        else:
            print(f"{describe(info)} at {path}{other}; force=true retrains it")
        return
    device = resolve_device(args["device"])
    if args["cpu_threads"] > 0:
        torch.set_num_threads(args["cpu_threads"])
    if not logging.getLogger().handlers:  # the epoch lines, above the progress bar
        logging.basicConfig(level=logging.INFO, format="%(message)s",
                            handlers=[RichHandler(console=get_console(), show_path=False)])
    epochs = args.get("epochs", DEFAULT_EPOCHS[dataset])
    path, test_acc, seconds = train_and_save(dataset, args["dataset.root"], epochs, args["seed"], device,
                                             augment=args["augment"])
    _, info = load_classifier(dataset)  # what later metrics will load, hash checked
    print(f"test accuracy {100 * test_acc:.2f}% after {epochs} epochs ({seconds:.0f} s); wrote {path}")
    print(f"classifier: {describe(info)}")
    if info["below_target"]:
        print(f"warning: below the protocol's target of {100 * TARGETS[dataset]:g}% for {dataset}; metrics computed "
              "with it say so. Train longer (epochs=) with force=true", file=sys.stderr)


class Terminated(KeyboardInterrupt):
    """SIGTERM outside a run's loop (start-up, a report): stops like Ctrl-C, exit status 143."""

    signum = signal.SIGTERM


def _inside_an_import(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


_LOGGING_INTERNALS = str(Path(logging.__file__).parent)


def _inside_logging(frame) -> bool:
    """Whether the signal came inside the logging module's own code (its lock, a handler's flush or close,
    its shutdown at exit): an exception raised there is often "ignored" by the interpreter, which prints a
    traceback and goes on (a random Ctrl-C in test_kill met `_releaseLock` after the run had completed)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith(_LOGGING_INTERNALS):
            return True
        frame = frame.f_back
    return False


def _stop(signum) -> None:
    print(f"ganlab: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit: every file is already whole (atomic writes), and the interpreter's own shutdown
    # after a KeyboardInterrupt can end the process by the signal instead of this exit status.
    os._exit(128 + signum)


def _on_signal(signum, frame) -> None:
    """Ctrl-C or SIGTERM outside a run's loop (start-up, a report). Inside an import an exception
    raised here can cross C++ extension code (torch's pybind11 module set-up), which aborts the
    process with a C++ stack on the terminal (exit -6); nothing of ours is written during an import,
    so there it stops at once; so it does inside the logging module's own code (`_inside_logging`), where
    nothing of ours is written either. Elsewhere it raises, so that open `finally` blocks tidy up."""
    if _inside_an_import(frame) or _inside_logging(frame):
        _stop(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


_START_UP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _quiet_thread_errors(args) -> None:
    """A library's writer thread that hits a full disk (TensorBoard's) must not print a traceback:
    the main thread meets the same error at its next write and says it in one line."""
    if not issubclass(args.exc_type, OSError):
        threading.__excepthook__(args)


def main(argv: list[str] | None = None) -> None:
    # A log handler that cannot write (a full disk under train.log) drops the line, without a traceback.
    saved = logging.raiseExceptions, threading.excepthook
    logging.raiseExceptions = False
    threading.excepthook = _quiet_thread_errors
    on_main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _on_signal) for sig in _START_UP_SIGNALS} if on_main_thread else {}
    try:
        with watched_stdout():  # which OSError was standard output's: one line on stderr, not a lost one
            _main(argv)
    except KeyboardInterrupt as exc:
        # Ctrl-C or SIGTERM before a run's loop took over the signal (start-up, a report): nothing
        # half-written stays behind (every file is written atomically), so one line says it all.
        signum = getattr(exc, "signum", signal.SIGINT)
        if on_main_thread:  # a second Ctrl-C while we leave must not print a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop(signum)
    finally:  # as they were: main() is also called in-process (tests, notebooks)
        logging.raiseExceptions, threading.excepthook = saved
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# The exit status of a command whose standard output was a pipe that its reader closed (`ganlab report DIR |
# head`): a Unix tool killed by SIGPIPE ends with 128 + 13, as the shell reports it.
SIGPIPE_STATUS = 128 + signal.SIGPIPE


def _main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(usage())
            return
        if argv[0] in ("-sc", "--shell-completion"):  # what `ganlab train -sc` does (ganlab/completion.py)
            from ganlab import completion

            completion.complete(argv[1:], COMMANDS)
            return
        if argv[0] == "--version":  # the version and the git commit (ganlab/provenance.py); no torch imported
            print(provenance.version_line())
            return
        command, rest = argv[0], argv[1:]
        with provenance.command(["ganlab", *argv]):  # what the runs record as their command line
            _command(command, rest)
    except GanlabError as exc:  # the one place an error becomes its line and exit status
        fail(str(exc), exc.exit_code)
    except SystemExit as exc:
        # rich meets a closed pipe itself: stdout to /dev/null and SystemExit(1) (Console.on_broken_pipe)
        if isinstance(exc.__context__, BrokenPipeError) and on_stdout(exc.__context__):
            sys.exit(SIGPIPE_STATUS)
        raise
    except OSError as exc:
        if not on_stdout(exc):
            raise
        if isinstance(exc, BrokenPipeError):
            # The reader went away (`ganlab report DIR | head`): what it did not read is not an error to
            # report. No line, and the status of a Unix tool that SIGPIPE ended (Python ignores the signal);
            # watched_stdout() then points stdout at /dev/null, so that the interpreter's last flush does not
            # fail again (Python's docs, "Note on SIGPIPE").
            sys.exit(SIGPIPE_STATUS)
        # `ganlab ... >/dev/full`: said on stderr, since stdout cannot take it.
        fail(f"cannot write to {STDOUT}: {exc.strerror or exc}", WriteError.exit_code)


def _check_working_directory() -> None:
    """A working directory deleted under the shell would end a command in torch's import (an MKL abort
    without Python's help: "Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so"); Hydra and every
    relative path need it too. Checked before any command imports torch."""
    try:
        os.getcwd()
    except FileNotFoundError:
        raise UsageError("the current directory no longer exists: cd to an existing directory") from None


def _command(command: str, rest: list[str]) -> None:
    run = {"train": train, "eval": evaluate, "sample": sample, "report": report, "classifier": classifier}.get(command)
    if run is None:
        raise UsageError(f"unknown command '{command}'; commands: {', '.join(COMMANDS)} (see `ganlab --help`)")
    _check_working_directory()
    run(rest)


if __name__ == "__main__":
    main()
