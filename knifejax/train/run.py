"""The run directory: everything one training run writes, and `load_run` to get the trained model back.

    RUN/
      config.json          the TrainConfig (running the same command again resumes; a changed recipe is refused)
      classes.json         class names, index = label
      model.json           architecture, parameter counts (all and trainable), frozen stages, input size
      data_report.json     per data role: items, items skipped by --skip-bad, and their problems
      metrics.jsonl        one JSON line per finished epoch
      curves.png           loss (log scale) and MAP@5 per epoch, redrawn once 30 s old and at the run's end
      test_metrics.json    the final model on --test-data, once, at the end
      checkpoints/latest/  Orbax: full training state + data position, the two newest steps
      checkpoints/best/    Orbax: the state of the epoch with the best validation MAP@5
      stopped.json         only for a run trained side by side (`fit_many`) whose loss became non-finite: why it
                           stopped while the others trained on; the group, resumed, leaves it stopped
"""

from __future__ import annotations

import json
import warnings
from contextlib import AbstractContextManager
from pathlib import Path

from flax import nnx

from knifejax.atomic_write import write_text_atomically
from knifejax.errors import ConfigError, MissingError, UserError
from knifejax.folder_lock import FolderInUseError, held
from knifejax.models.weights_folder import weights_file
from knifejax.models.registry import create_model, get_pretrained_cfg
from knifejax.train.checkpoint import Checkpoints
from knifejax.train.config import TrainConfig
from knifejax.weights import load_timm_weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Fields a resumed run may change: they alter how long it runs or how it is fed, not what it computes. Not
# `max_steps`: a bounded run evaluates, logs and keeps as best the epoch its bound cuts short, which a longer run
# would not, so extending it would not give the longer run.
RESUMABLE_CHANGES = ("epochs", "workers", "data_placement", "cache_dir", "weights_dir")


class RunInUseError(FolderInUseError):
    """Another trainer holds the run directory."""


class RunDamagedError(UserError, ValueError):
    """A file of the run directory cannot be read: the message names it and says what to do."""


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.classes = self.path / "classes.json"
        self.metrics = self.path / "metrics.jsonl"
        self.curves = self.path / "curves.png"
        self.test_metrics = self.path / "test_metrics.json"
        self.model_summary = self.path / "model.json"
        self.data_report = self.path / "data_report.json"
        self.latest = self.path / "checkpoints" / "latest"
        self.best = self.path / "checkpoints" / "best"
        self.stopped = self.path / "stopped.json"

    def read_config(self) -> TrainConfig:
        try:
            return TrainConfig.load(self.config)
        except (ValueError, TypeError) as error:  # JSONDecodeError is a ValueError
            raise RunDamagedError(
                f"{self.config}: cannot read the run's configuration ({error}); restore the file, or start the run "
                "again in a new --run directory"
            ) from error

    def kept_steps(self, folder: Path | None = None) -> list[int]:
        """The steps of the complete checkpoints in `folder` (default: `latest`), in order, read from the folder
        names without opening them: Orbax names a finished checkpoint by its step, one being written otherwise."""
        folder = self.latest if folder is None else folder
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []

    def trained(self) -> bool:
        """Whether the run has anything to resume: a metrics line or a checkpoint."""
        logged = self.metrics.exists() and self.metrics.stat().st_size > 0
        return logged or bool(self.kept_steps() or self.kept_steps(self.best))

    def check_config(self, cfg: TrainConfig) -> None:
        """Refuse `cfg` when the run already holds another configuration; writes nothing. A run that never trained
        a step (stopped before its first, say by a step too large for the memory) takes any configuration."""
        if self.config.exists() and self.trained():
            saved = self.read_config()
            changed = saved.differences(cfg, ignore=RESUMABLE_CHANGES)
            if changed:
                raise ConfigError(
                    f"{self.path} holds a run with another configuration ({'; '.join(changed)}); resume it with "
                    f"its own settings (see {self.config}), or give a new --run directory"
                )

    def start(self, cfg: TrainConfig) -> None:
        """Commit `cfg` to the run (after its data, arguments and initial weights were found usable): a failed start
        leaves none."""
        self.check_config(cfg)
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.config, json.dumps(cfg.to_json(), indent=2) + "\n")

    def lock(self) -> AbstractContextManager[None]:
        """Hold the run for one trainer: a second one stops at once, naming the holder (`knifejax.folder_lock`)."""
        return held(self.path, "trained", "give another --run", RunInUseError)

    def write_classes(self, names: list[str]) -> None:
        write_text_atomically(self.classes, json.dumps(names, indent=1) + "\n")

    def read_classes(self) -> list[str]:
        return json.loads(self.classes.read_text())

    def write_model_summary(self, summary: dict) -> None:
        write_text_atomically(self.model_summary, json.dumps(summary, indent=1) + "\n")

    def history(self) -> list[dict]:
        """The metrics lines; a last line torn by a kill mid-write is dropped (its epoch is trained again)."""
        if not self.metrics.exists():
            return []
        lines = [line for line in self.metrics.read_text().splitlines() if line.strip()]
        history = []
        for number, line in enumerate(lines, start=1):
            try:
                history.append(json.loads(line))
            except json.JSONDecodeError:
                if number < len(lines):
                    raise RunDamagedError(
                        f"{self.metrics}: line {number} is not JSON; the metrics log is damaged: repair or delete the "
                        "line (the run's checkpoints are not affected)"
                    ) from None
        return history

    def keep_epochs_before(self, epoch: int) -> None:
        """Drop metric lines of epochs >= `epoch` (written after the checkpoint a resumed run restarts from), and a
        torn last line."""
        self._write_metrics([h for h in self.history() if h["epoch"] < epoch])

    def append_metrics(self, line: dict) -> None:
        self._write_metrics([*self.history(), line])

    def _write_metrics(self, lines: list[dict]) -> None:
        """The whole log, atomically: a kill mid-write leaves the previous log, never a torn line."""
        write_text_atomically(self.metrics, "".join(json.dumps(h) + "\n" for h in lines))


def normalization(norm: str, pretrained_cfg: dict) -> tuple[tuple, tuple]:
    """(mean, std) of the inputs: "model" takes the model's pretrained_cfg, "imagenet" ImageNet's as the study."""
    if norm == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(pretrained_cfg["mean"]), tuple(pretrained_cfg["std"])


def image_size(cfg: TrainConfig, pretrained_cfg: dict) -> int:
    return cfg.image_size or int(pretrained_cfg["input_size"][-1])


def build_model(cfg: TrainConfig, num_classes: int, *, initial_weights: bool = True) -> nnx.Module:
    """The model `cfg` describes; with `initial_weights`, its pretrained and --weights weights loaded ('default'
    pretrained weights from `cfg.weights_dir` when it is set).

    A model built for one input size (a ViT: `fixed_input_size` in its pretrained configuration) is built for
    `cfg.image_size` when that is set, as `timm.create_model(..., img_size=...)`; its pretrained position
    embeddings are then resampled to the new patch grid on loading.
    """
    kwargs = dict(num_classes=num_classes, seed=cfg.seed, drop_rate=cfg.drop_rate, drop_path_rate=cfg.drop_path_rate)
    if cfg.image_size and get_pretrained_cfg(cfg.model).get("fixed_input_size"):
        kwargs["img_size"] = cfg.image_size
    pretrained = initial_weights and cfg.pretrained is not None
    if pretrained and cfg.pretrained != "default":
        kwargs["pretrained_cfg_overlay"] = {"file": cfg.pretrained}
    elif pretrained and cfg.weights_dir is not None and (found := weights_file(cfg.model, cfg.weights_dir)):
        kwargs["pretrained_cfg_overlay"] = {"file": found}
    model = create_model(cfg.model, pretrained=pretrained, **kwargs)
    if initial_weights and cfg.weights is not None:
        load_timm_weights(model, cfg.weights)
    return model


def _warn(message: str) -> None:
    warnings.warn(message.removeprefix("warning: "), stacklevel=3)


def load_run(run_dir: str | Path, which: str = "best") -> tuple[nnx.Module, TrainConfig, list[str]]:
    """The trained model of a run (in eval mode), its config and class names.

    which: "best" (highest validation MAP@5) or "latest". Every array is checked against the checksum saved
    with it; a damaged newest "latest" step is named in a warning and the step before it is loaded instead.
    """
    run = RunDir(run_dir)
    if not run.config.exists():
        raise MissingError(f"{run.path} is not a run directory: it has no config.json")
    if which not in ("best", "latest"):
        raise ValueError(f"which must be 'best' or 'latest', got {which!r}")
    cfg = run.read_config()
    names = run.read_classes()
    folder = run.best if which == "best" else run.latest
    checkpoints = Checkpoints(folder, create=False)
    if checkpoints.latest_step() is None:
        raise MissingError(f"{folder} holds no checkpoint yet: the run has not finished an epoch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a fresh head is expected: the checkpoint replaces it
        model = build_model(cfg, cfg.num_classes or len(names), initial_weights=False)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    try:
        trees, _ = checkpoints.restore({"model": {"params": params, "rest": rest}}, fall_back=_warn)
    finally:
        checkpoints.close()
    nnx.update(model, trees["model"]["params"], trees["model"]["rest"])
    model.eval()
    return model, cfg, names
