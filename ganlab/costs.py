"""The cost of a sweep, said in one line before it starts (`ganlab train -m`, ganlab/sweep.py).

Each job's training time is its steps x replicas divided by the speed measured for its remedy on the same setup
(configs/measured_costs.yaml: figures from docs/benchmarks.md, each quoting its table there); their sum is the
sweep's machine time, and divided by the jobs the launcher runs at once (at most the cores) the best wall time it
can reach. A job measured nowhere (another dataset, loss, model, batch size, a remedy list, a GPU) has no measured
cost: it is named as such, never guessed from a neighbour.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from omegaconf import OmegaConf

from ganlab.config import CONFIG_DIR

TABLE = CONFIG_DIR / "measured_costs.yaml"
# What a step's time depends on: a job must equal its measured setup in all of them. Not the learning rates, the
# seed, the length, the evaluation cadence or the output (a run's few evaluations are part of the measured runs).
# The torch threads count too, compared as each job resolves them (cpu_threads=auto: its share of the cores) against
# the threads each setup was measured on.
COST_KEYS = ("dataset", "model", "loss", "remedy", "batch_size", "speed", "ema", "optim.g._target_", "optim.d._target_")


@functools.cache
def table() -> dict:
    import yaml

    return yaml.safe_load(TABLE.read_text())


def cost_view(config: dict) -> dict:
    """The values of COST_KEYS in a resolved config."""
    node = OmegaConf.create(config)
    return {key: _plain(OmegaConf.select(node, key)) for key in COST_KEYS}


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def measured(config: dict, compose: Callable[[list[str]], dict], cores: int) -> tuple[dict | None, str]:
    """The table's entry for a job's resolved config, and why not when None. `compose(overrides)`: the resolved
    config those overrides make (the measured setup with the job's remedy, at its defaults); `cores`: the cores
    the job holds (its threads under cpu_threads=auto)."""
    from ganlab.devices import resolve_device
    from ganlab.threads import of_job

    if resolve_device(config.get("device", "auto")).type != "cpu":
        return None, f"device={config.get('device')} trains on a GPU here, and every measured figure is a CPU's"
    remedies = list(config.get("remedy") or {})
    if len(remedies) != 1:
        return None, f"remedy={'+'.join(remedies)} (a combination) is not measured"
    name = remedies[0]
    differ: list[str] = []
    threads = of_job(config, cores)
    for setup in table()["setups"].values():
        entry = (setup.get("remedies") or {}).get(name)
        if entry is None:
            continue
        reference, job = cost_view(compose([*setup["overrides"], f"remedy={name}"])), cost_view(config)
        differ = [k for k in COST_KEYS if reference[k] != job[k]]
        if threads != setup["threads"]:
            differ.append(f"cpu_threads (it trains on {threads}, the setup was measured on {setup['threads']})")
        if not differ:
            return {**entry, "threads": setup["threads"]}, ""
    if differ:
        return None, f"remedy={name} was measured on a setup this job differs from in {', '.join(differ)}"
    return None, f"remedy={name} is not measured"


def duration(seconds: float) -> str:
    """`about 15 min`: whole seconds, minutes or tenths of an hour, as precise as an estimate from other runs is."""
    if seconds < 1:
        return "under 1 s"
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 90 * 60:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"


def estimate(configs: list[dict], at_once: int, cores: int, compose: Callable[[list[str]], dict]) -> str:
    """The one line: the sweep's machine time at the measured speeds and its best wall time with `at_once` jobs
    running together on `cores` cores; or, for the jobs with no measured figure, that they have none."""
    info = table()
    machine, source = info["machine"], info["source"]
    composed = functools.cache(lambda overrides: compose(list(overrides)))  # each measured setup composed once

    def lookup(overrides: list[str]) -> dict:
        return composed(tuple(overrides))

    known, unknown, speeds, threads = 0.0, [], {}, set()
    share = max(1, cores // max(1, min(at_once, len(configs))))  # the cores each job holds (ganlab/threads.py)
    for i, config in enumerate(configs):
        entry, why = measured(config, lookup, share)
        if entry is None:
            unknown.append((i, why))
            continue
        rate = float(entry["steps_per_second"])
        threads.add(entry["threads"])
        speeds[next(iter(config["remedy"]))] = rate
        known += int(config["steps"]) * int(config.get("replicas", 1)) / rate
    runs = sum(int(c.get("replicas", 1)) for c in configs)
    if len(unknown) == len(configs):
        first = unknown[0][1]
        return (f"sweep cost: no measured cost for its {runs} run{'s' if runs != 1 else ''}: {first} (the measured "
                f"setups: ganlab/configs/measured_costs.yaml, from {source})")
    rates = ", ".join(f"{name} {rate:.1f}" for name, rate in speeds.items())
    parallel = max(1, min(at_once, cores, len(configs) - len(unknown)))
    counts = "-".join(str(t) for t in sorted(threads))
    line = (f"sweep cost: {duration(known)} of machine time at the speed measured on a {machine}, {counts} torch "
            f"thread{'s' if counts != '1' else ''} a job ({source}; steps/s: {rates})")
    if parallel > 1:
        line += f", at best {duration(known / parallel)} with {parallel} jobs at once"
    if unknown:
        line += (f"; no measured cost for {len(unknown)} of {len(configs)} jobs, not counted (job {unknown[0][0]}: "
                 f"{unknown[0][1]})")
    return line
