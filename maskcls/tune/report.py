"""`maskcls tune --report STUDY_DIR`: Optuna's own plots as PNG and one HTML page, and the best
trial as a ready config and a recipe entry.

    STUDY_DIR/report/report.html          every plot and the trial table, in one file
    STUDY_DIR/report/*.png                history, importances, parallel coordinates, slices, epochs
    STUDY_DIR/report/best.yaml            the best trial's whole config (train it with --config)
    STUDY_DIR/report/best-recipe.yaml     a one-member recipe: the base config plus the best values
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import yaml

from ..config import dump_config, load_config
from ..errors import MaskclsError
from ..fileio import atomic_write, atomic_write_text, folder_written_whole
from ..htmlpage import data_uri, escape, page, table
from ..infer.recipe import SHIPPED_RECIPES
from .study import count, describe_trial, open_storage, read_study_file

# Optuna's matplotlib plots, in the page's order; each is skipped with its reason when the study
# cannot draw it yet (importances need two finished trials that differ, say).
PLOTS = (
    ("history", "Optimisation history", "plot_optimization_history"),
    ("importances", "Parameter importances", "plot_param_importances"),
    ("parallel", "Parallel coordinates", "plot_parallel_coordinate"),
    ("slice", "Slice plots", "plot_slice"),
    ("epochs", "Validation macro-F1 per epoch (pruned trials stop early)", "plot_intermediate_values"),
)


def load_study(study_dir: Path, storage: str | None):
    import optuna

    record = read_study_file(study_dir)
    url = storage or record["storage"]
    if "***" in url:
        raise MaskclsError(f"{study_dir}: the study lives in {url}, whose password is not written down; pass --storage URL")
    return record, optuna.load_study(study_name=record["study"], storage=open_storage(url))


def write_report(study_dir, storage: str | None = None, force: bool = False) -> dict:
    study_dir = Path(study_dir)
    record, study = load_study(study_dir, storage)
    out = study_dir / "report"
    if out.exists() and not force:
        raise MaskclsError(f"{out}: exists; pass --force to replace the report")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        raise MaskclsError(f"study {record['study']!r}: no trial has completed yet, so there is nothing to report; run more trials")
    with folder_written_whole(out) as staging:
        best = write_report_files(staging, record, study, complete)
    return {"report": str(out / "report.html"), "best_trial": best.number, "best_macro_f1": best.value,
            "best_config": str(out / "best.yaml"), "best_recipe": str(out / "best-recipe.yaml")}


def write_report_files(staging: Path, record: dict, study, complete: list):
    """report.html, its plots, best.yaml and best-recipe.yaml written into `staging`; returns the best trial."""
    sections = []
    for stem, title, plot in PLOTS:
        png, reason = draw(study, plot)
        if png is None:
            sections.append(f"<h2>{escape(title)}</h2><p>not drawn: {escape(reason)}</p>")
            continue
        with atomic_write(staging / f"{stem}.png", "wb", what="plot") as handle:
            handle.write(png)
        sections.append(f'<h2>{escape(title)}</h2><img src="{data_uri(png)}" alt="{escape(title)}">')
    best = max(complete, key=lambda t: t.value)
    config_text = best_config(record, best)
    atomic_write_text(staging / "best.yaml", config_text, what="best config")
    recipe = best_recipe(record, best)
    atomic_write_text(staging / "best-recipe.yaml", yaml.safe_dump(recipe, sort_keys=False), what="recipe")
    header = (f"<p>{len(study.trials)} trials: {len(complete)} complete, {count(study, ('PRUNED',))} "
              f"pruned, {count(study, ('FAIL',))} failed. Best: trial {best.number}, validation "
              f"macro-F1 {best.value:.4f}. Its config is best.yaml; best-recipe.yaml is a recipe for <code>maskcls fit</code>.</p>")
    rows = [[f"<td>{t.number}</td>", f"<td>{t.state.name.lower()}</td>", f"<td>{'' if t.value is None else f'{t.value:.4f}'}</td>",
             f"<td>{escape(describe_trial(t).split(': ', 1)[1])}</td>"] for t in study.trials]
    body = header + "".join(sections) + "<h2>Trials</h2>" + table(["trial", "state", "macro-F1", "result"], rows)
    atomic_write_text(staging / "report.html", page(f"Study {record['study']}", body, "img { max-width: 100%; }"), what="report")
    return best


def draw(study, plot_name: str) -> tuple[bytes | None, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as plots

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            drawn = getattr(plots, plot_name)(study)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    axes = drawn.flat[0] if hasattr(drawn, "flat") else drawn
    figure = axes.figure
    if not figure.axes or all(not ax.has_data() for ax in figure.axes):
        plt.close(figure)
        return None, "the study has too few finished trials for this plot"
    figure.set_size_inches(max(figure.get_size_inches()[0], 8), max(figure.get_size_inches()[1], 5))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue(), ""


def override_text(key: str, value) -> str:
    """key=value as the CLI and a recipe take it (JSON is valid YAML for numbers, text and lists)."""
    return f"{key}={value}" if isinstance(value, str) else f"{key}={json.dumps(value)}"


def portable_overrides(record: dict) -> list[str]:
    """The study's own overrides, less what belongs to the machine it ran on and the trials'
    tracking (a study logs none), so the best config tracks as its base config does."""
    return [o for o in record["overrides"] if not o.startswith(("data.root=", "out=", "name=", "tracking="))]


def best_config(record: dict, best) -> str:
    """The whole config of the best trial, with no data folder or run name (given when it is trained)."""
    cfg = load_config(record["config"], [*portable_overrides(record), *(override_text(k, v) for k, v in best.params.items())])
    cfg = cfg.updated({"data.root": None, "out": "runs", "name": None})
    scored = f"the mean over {record['folds']} folds" if record.get("folds") else "the person holdout"
    return (f"# Best trial ({best.number}) of study {record['study']}: validation macro-F1 {best.value:.4f} on {scored}.\n"
            f"# maskcls train --config best.yaml data.root=DATA\n" + dump_config(cfg))


def best_recipe(record: dict, best) -> dict:
    """A recipe entry: the base config with the best values as overrides; TTA and vote from the shipped
    recipe of the same name, if there is one."""
    shipped = SHIPPED_RECIPES / f"{Path(record['config']).stem}.yaml"
    recipe = yaml.safe_load(shipped.read_text()) if shipped.is_file() else {}
    member = {"name": "tuned", "config": record["config"],
              "overrides": [*portable_overrides(record), *(override_text(k, v) for k, v in best.params.items())]}
    return {"name": f"{record['study']}-best", "version": 1,
            "description": f"Trial {best.number} of study {record['study']} (validation macro-F1 {best.value:.4f}).",
            "members": [member], "tta": recipe.get("tta", "none"), "vote": recipe.get("vote", {"method": "soft"}),
            "by_person": recipe.get("by_person", False)}
