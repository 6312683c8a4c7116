"""`maskcls tune`: an Optuna study over a config, one trial = one ordinary training run.

    STUDY_DIR/study.json        the study's name, storage, base config, space and folds
    STUDY_DIR/study.db          the default storage (SQLite); a --storage URL replaces it
    STUDY_DIR/trials/trial-N/   each trial's run folder (with --folds K: trial-N/fold{k}/)

The objective is the validation macro-F1 on the person-grouped holdout (or its mean over K
folds), reported every epoch so the pruner can stop a trial that trails the others. `--trials N`
is the number of finished (complete or pruned) trials the study should hold: rerunning the same
command runs only what is missing, and several workers (processes or machines on one database
URL) can run the same command at once. A trial that raises is recorded as failed with its reason
and the study goes on; a worker killed mid-trial loses that trial alone, which the next worker
on the same host marks failed (other hosts' dead trials are failed by Optuna's heartbeat).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Config, flat, load_config, resolve_config_path
from ..errors import MaskclsError
from ..fileio import atomic_write_text
from ..train import train
from .space import SearchSpace, load_space

PRUNERS = ("median", "hyperband", "none")
FINISHED = ("COMPLETE", "PRUNED")
# Settings that differ between the machines sharing a study without making it another study.
MACHINE_KEYS = ("data.root", "data.num_workers", "out", "name", "device", "train.threads", "tracking")
# A dead worker on another host stops beating; Optuna fails its trial after the grace period.
HEARTBEAT_S, GRACE_S = 20, 120
SCHEMA_RACE_TRIES = 3  # opening a new database, for workers that start together
STUDY_FILE = "study.json"
# This many failed trials in a row stop a worker: the config or the space is wrong, not one draw.
FAILURES_IN_A_ROW = 5

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudySpec:
    """What a study is: the trials' base config, the space over it, and how a trial is scored."""
    name: str
    config: str  # the --config as given (a file or a shipped name)
    overrides: tuple[str, ...]
    space: SearchSpace
    folds: int | None

    def identity(self, base: Config) -> dict:
        """What every worker on the study must agree on (machine-specific settings left out)."""
        shared = {k: v for k, v in flat(base.to_dict()).items() if k not in MACHINE_KEYS}
        return {"maskcls_space": self.space.fingerprint(), "maskcls_config": json.dumps(shared, sort_keys=True, default=str),
                "maskcls_folds": self.folds or 0}


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def default_storage(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def redact(url: str) -> str:
    """The URL as it may be printed or written down: without its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("@")[-1] if "@" in url else url


def open_storage(url: str):
    """Optuna's RDB storage on `url`, or a one-line error saying why it cannot be reached."""
    import optuna
    from sqlalchemy.exc import IntegrityError, SQLAlchemyError

    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]  # the pinned driver, not SQLAlchemy's default psycopg2
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    if url.startswith("postgresql"):
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    try:
        for attempt in range(SCHEMA_RACE_TRIES):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
            except IntegrityError:
                # Workers started together on an empty database race to create Optuna's tables, and
                # PostgreSQL refuses the loser's CREATE TABLE; by the next try the tables are there.
                if attempt == SCHEMA_RACE_TRIES - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise MaskclsError(f"{redact(url)}: cannot open the study storage ({reason}); check the URL, that the database "
                           "server is running and reachable, and the user and password") from None


def open_study(spec: StudySpec, storage, base: Config, pruner: str):
    """Create the study, or load it and check it is this same study."""
    import optuna

    study = optuna.create_study(study_name=spec.name, storage=storage, pruner=make_pruner(pruner, base),
                                direction="maximize", load_if_exists=True)
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise MaskclsError(f"study {spec.name!r}: exists in this storage and minimizes; choose another --study")
    identity, held = spec.identity(base), study.user_attrs
    if not held.get("maskcls_space"):
        for key, value in identity.items():
            study.set_user_attr(key, value)
        return study
    for key, what in (("maskcls_space", "search space"), ("maskcls_config", "config"), ("maskcls_folds", "--folds")):
        if held.get(key) != identity[key]:
            raise MaskclsError(f"study {spec.name!r}: is in use with a different {what}; choose another --study name, "
                               "or rerun it with its own --config, --space, --folds and overrides")
    return study


def make_pruner(name: str, base: Config):
    import optuna

    if name == "median":
        # Some trials must finish first, and each trial gets a few epochs before it can be judged.
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=max(1, epochs_of(base) // 4))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto")
    return optuna.pruners.NopPruner()


def epochs_of(cfg: Config) -> int:
    return cfg.train.probe_epochs if cfg.model.mode == "probe" else cfg.train.epochs


def fail_dead_local_trials(study, storage) -> list[int]:
    """Trials left running by a worker of this host that no longer exists (kill -9): failed now, with why."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get("worker", ""))
        worker_host, _, pid = worker.rpartition(":")
        if worker_host != host or not pid.isdigit() or pid_alive(int(pid)):
            continue
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", f"its worker ({worker}) ended without finishing it")
        if storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            failed.append(trial.number)
    return failed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Objective:
    """One trial: the base config with the trial's values, trained as an ordinary run (or K folds)."""

    def __init__(self, spec: StudySpec, base: Config, trials_dir: Path, progress: bool):
        self.spec, self.base, self.trials_dir, self.progress = spec, base, trials_dir, progress

    def __call__(self, trial) -> float:
        import optuna

        trial.set_user_attr("worker", worker_id())
        try:
            params = self.spec.space.suggest(trial)
            name = f"trial-{trial.number:04d}"
            trial.set_user_attr("run", str(self.trials_dir / name))
            cfg = self.base.updated({**params, "out": str(self.trials_dir), "name": name})
            if not self.spec.folds:
                return self.run(trial, cfg, step_offset=0)["best_macro_f1"]
            scores = []
            cfg = cfg.updated({"data.folds": self.spec.folds, "out": str(self.trials_dir / name)})
            for fold in range(self.spec.folds):
                fold_cfg = cfg.updated({"data.fold": fold, "name": f"fold{fold}"})
                scores.append(self.run(trial, fold_cfg, step_offset=fold * epochs_of(cfg))["best_macro_f1"])
                trial.set_user_attr("fold_macro_f1", scores)
            return sum(scores) / len(scores)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted")
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__)
            raise

    def run(self, trial, cfg: Config, step_offset: int) -> dict:
        import optuna

        def report(epoch: int, row: dict) -> None:
            trial.report(float(row["val_macro_f1"]), step_offset + epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {epoch + 1} (val macro-F1 {float(row['val_macro_f1']):.4f})")

        return train(cfg, on_epoch_end=report, progress=self.progress)


def describe_trial(trial) -> str:
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    state = trial.state.name
    if state == "COMPLETE":
        return f"trial {trial.number}: macro-F1 {trial.value:.4f}  ({params})"
    if state == "PRUNED":
        steps = max(trial.intermediate_values) + 1 if trial.intermediate_values else 0
        return f"trial {trial.number}: pruned after {steps} epochs  ({params})"
    return f"trial {trial.number}: failed: {trial.user_attrs.get('fail_reason', 'see the log')}  ({params})"


def count(study, states) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=tuple(TrialState[s] for s in states)))


def tune(config, space, trials: int, storage: str | None = None, study: str | None = None, out=None, folds: int | None = None,
         pruner: str = "median", seed: int = 0, overrides=(), progress: bool = True) -> dict:
    """Run trials until the study holds `trials` finished ones; return the best so far."""
    import optuna

    if trials < 1:
        raise MaskclsError(f"--trials {trials}: ask for at least 1 trial")
    if folds is not None and folds < 2:
        raise MaskclsError(f"--folds {folds}: use at least 2 folds, or leave --folds out for the holdout")
    if pruner not in PRUNERS:
        raise MaskclsError(f"--pruner {pruner}: choose one of {', '.join(PRUNERS)}")
    if not resolve_config_path(config).is_file():
        raise MaskclsError(f"{config}: config not found; pass a YAML file or a name in configs/ such as cpu-fast")
    name = study or f"{Path(str(config)).stem}-{Path(str(space)).stem}"
    study_dir = Path(out) if out else Path("runs") / "tune" / name
    if study_dir.exists() and not study_dir.is_dir():
        raise MaskclsError(f"{study_dir}: is a file; --out takes a folder")
    overrides = tuple(o for o in overrides if not o.startswith(("out=", "name=")))
    if not any(o.startswith("tracking=") for o in overrides):
        # The study records every trial's epochs already; per-trial TensorBoard logs and figures
        # would cost more than a probe trial's epochs. tracking=[tensorboard] brings them back.
        overrides = ("tracking=[]", *overrides)
    base = load_config(config, [*overrides, f"out={study_dir / 'trials'}", "name=base"])
    if not base.data.root:
        raise MaskclsError("data.root is not set; pass data.root=PATH (the folder holding train/train.csv)")
    if not folds and not base.validates:
        raise MaskclsError("a search needs a holdout to score trials on: keep data.val_fraction above 0, or pass --folds K")
    spec = StudySpec(name, str(config), overrides, load_space(space, base), folds)  # a bad space fails before any folder or trial
    study_dir.mkdir(parents=True, exist_ok=True)
    url = storage or default_storage(study_dir)
    rdb = open_storage(url)

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is printed below, tracebacks go to the trial's reason
    handle = open_study(spec, rdb, base, pruner)
    write_study_file(study_dir, spec, url)
    for number in fail_dead_local_trials(handle, rdb):
        print(f"trial {number}: marked failed: its worker was killed before it finished", flush=True)
    # Seeded TPE; a resumed study draws on from where it stands, not from the seed's first values
    # again. The two numbers are mixed, not added, so workers with their own --seed never draw alike.
    sampler_seed = int(np.random.SeedSequence([seed, len(handle.trials)]).generate_state(1)[0])
    handle.sampler = optuna.samplers.TPESampler(seed=sampler_seed)
    objective = Objective(spec, base, study_dir / "trials", progress)

    def print_trial(study_, trial):
        print(describe_trial(trial), flush=True)

    ran, failures_in_a_row = 0, 0
    while True:
        finished, running = count(handle, FINISHED), count(handle, ("RUNNING",))
        if finished >= trials or finished + running >= trials:
            break  # done, or other workers are running the trials that are missing
        if failures_in_a_row >= FAILURES_IN_A_ROW:
            raise MaskclsError(f"study {name!r}: the last {failures_in_a_row} trials all failed ({last_fail_reason(handle)}); "
                               "fix the config or the space, then rerun the same command")
        handle.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[print_trial])
        last = handle.trials[-1] if handle.trials else None
        ran += 1
        failures_in_a_row = failures_in_a_row + 1 if last is not None and last.state.name == "FAIL" else 0
    return summary(handle, study_dir, ran)


def last_fail_reason(study) -> str:
    from optuna.trial import TrialState

    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return failed[-1].user_attrs.get("fail_reason", "no reason recorded") if failed else "no reason recorded"


def summary(study, study_dir: Path, ran: int) -> dict:
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    result = {"study": study.study_name, "study_dir": str(study_dir), "ran": ran, "trials": len(study.trials),
              "complete": len(complete), "pruned": count(study, ("PRUNED",)), "failed": count(study, ("FAIL",))}
    if complete:
        best = max(complete, key=lambda t: t.value)
        result |= {"best_trial": best.number, "best_macro_f1": best.value, "best_params": best.params}
    return result


def write_study_file(study_dir: Path, spec: StudySpec, url: str) -> None:
    record = {"study": spec.name, "storage": redact(url), "config": spec.config, "overrides": list(spec.overrides),
              "space": spec.space.to_dict(), "space_file": spec.space.source, "folds": spec.folds}
    atomic_write_text(study_dir / STUDY_FILE, json.dumps(record, indent=2) + "\n", what="study record")


def read_study_file(study_dir: Path) -> dict:
    path = Path(study_dir) / STUDY_FILE
    if not path.is_file():
        raise MaskclsError(f"{study_dir}: no {STUDY_FILE} here; pass the folder a `maskcls tune` run created (its --out)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise MaskclsError(f"{path}: is not valid JSON; it is written by `maskcls tune`, rerun it to restore the file") from None
