"""TensorBoard's HParams of a sweep's runs carry every key of the command line, swept or not, with its type
(ganlab/tracking.py `command_line_hparams`): the rows of an lr sweep differ in their lr."""

import logging

from conftest import TINY, run_dirs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

from ganlab.cli import main
from ganlab.tracking import INTEGER


def hparams(run_dir) -> tuple[dict, dict]:
    """The run's HParams as TensorBoard reads them: {name: value} with its type (a number a float, a bool a bool,
    a text an int where its column says it is an integer, else a str), and {name: ticked by default}."""
    events = EventAccumulator(str(run_dir)).Reload()
    content = {tag: plugin_data_pb2.HParamsPluginData.FromString(data)
               for tag, data in events.PluginTagToContent(metadata.PLUGIN_NAME).items()}
    infos = {info.name: info for info in content[metadata.EXPERIMENT_TAG].experiment.hparam_infos}
    values = {}
    for name, value in content[metadata.SESSION_START_INFO_TAG].session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        assert infos[name].type == {"number_value": api_pb2.DATA_TYPE_FLOAT64, "bool_value": api_pb2.DATA_TYPE_BOOL,
                                    "string_value": api_pb2.DATA_TYPE_STRING}[kind], name
        values[name] = getattr(value, kind)
        if kind == "string_value" and infos[name].description == INTEGER:
            values[name] = int(values[name])
    return values, {name: info.differs for name, info in infos.items()}


def test_an_lr_sweep_s_runs_carry_every_overridden_key_with_its_type(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()  # an earlier in-process job's handlers write to a closed capture stream
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    main(["train", "-m", "optim.d.lr=0.0001,0.0003", *TINY, "steps=4", "eval.every=2", "speed.channels_last=false",
          "model.latent_dim=3", "model.g.activation=tanh", "log.every=2", "cpu_threads=1", "resume=auto",
          "hydra.sweep.dir=sw"])
    runs = run_dirs(tmp_path / "sw")
    assert len(runs) == 2, capsys.readouterr()
    shown = [hparams(run_dir) for run_dir in runs]
    common = {"debug": "tiny", "steps": 4, "eval.every": 2, "speed.channels_last": False, "model.latent_dim": 3,
              "model.g.activation": "tanh", "dataset": "ring", "loss": "nsgan", "remedy": "none", "seed": 0,
              "batch_size": 32, "log.every": 2, "cpu_threads": 1}  # resume: the command's, not the run's
    for (values, _), lr in zip(shown, (0.0001, 0.0003)):
        assert values == {"optim.d.lr": lr, **common}
        assert {k: type(v) for k, v in values.items()} == {"optim.d.lr": float, **{k: type(v) for k, v in common.items()}}
    # The columns ticked by default: the overridden keys that make another experiment first (the swept lr among
    # them), then the six of every run; threads and cadence after them.
    _, ticked = shown[0]
    assert [name for name, on in ticked.items() if on] == ["optim.d.lr", "debug", "steps", "eval.every",
                                                           "speed.channels_last"]
    assert list(ticked)[-2:] == ["log.every", "cpu_threads"]


def test_a_run_from_python_has_the_six_keys_of_every_run(tmp_path):
    """No Hydra job, no command line: dataset, loss, remedy, seed, steps and batch size, as before."""
    from ganlab.tracking import command_line_hparams

    base = {"dataset": "ring", "loss": "nsgan", "remedy": "none", "seed": 0, "steps": 20, "batch_size": 32}
    assert command_line_hparams(None, base) == base
