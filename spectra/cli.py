"""The ``spectra`` command line.

Subcommands: ``reproduce`` (the bundled paper reproduction, the main job), ``analyze``, ``compare-ww`` and
``plugins``. Tables go to files (CSV/parquet) and a readable summary to stdout; nothing is overwritten
without ``--force``; a ``PATH_OR_MODULE`` is only imported when written as ``module:callable``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser", "resolve_target", "EXIT_CODES"]


def _out(text: str) -> None:
    sys.stdout.write(text + ("\n" if not text.endswith("\n") else ""))


def resolve_target(spec: str) -> Any:
    """A checkpoint path, or ``module:callable`` (imported and called only in that explicit form).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a ``module:callable`` that cannot be imported or does not return a model/state_dict.
    """
    path = Path(spec)
    if path.exists():
        return path
    if ":" in spec and not spec.startswith(("/", ".")) and "\\" not in spec:
        mod_name, _, attr = spec.partition(":")
        try:
            obj: Any = importlib.import_module(mod_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import {spec!r}: {exc}") from exc
        return obj() if callable(obj) else obj
    raise FileNotFoundError(f"no such file: {spec} (to build a model from code, pass module:callable)")


def _check_out(path: Path | None, force: bool) -> None:
    """Refuse to overwrite ``path`` (and, for a CSV, its ``.meta.json`` sidecar) unless ``force``."""
    if path is None or force:
        return
    for p in (path, path.with_name(path.name + ".meta.json")) if path.suffix == ".csv" else (path,):
        if p.exists():
            raise FileExistsError(f"{p} exists; pass --force to overwrite it")


EXIT_CODES = """exit status:
  0    done (layers whose analysis failed are rows in the table and listed on stdout; a figure that could
       not be drawn is listed on stderr, and the other figures are still written)
  2    nothing was done: bad arguments or input, an output that exists (without --force) or cannot be written
  130  interrupted (Ctrl-C)"""
MAX_NAME_BYTES = 200  # file names are limited to 255 bytes on common file systems


def _check_writable_dir(directory: Path, what: str) -> None:
    """Raise before any work when ``directory`` cannot hold the output (a file, or not writable)."""
    import tempfile

    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{what} {directory} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".spectra-write-test-"):
            pass
    except OSError as exc:
        raise ValueError(f"{what} {directory} is not writable: {exc.strerror or exc}") from exc


def _check_out_file(path: Path) -> None:
    if path.exists() and path.is_dir():
        raise ValueError(f"--out {path} is a directory; give a file name ending in .parquet or .csv")
    _check_writable_dir(path.parent if str(path.parent) else Path("."), "the directory of --out")


def _safe_name(text: str) -> str:
    """A file name from a layer name: unusual characters replaced, cut (with a hash) to fit any file system."""
    import hashlib

    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
    if len(name.encode()) > MAX_NAME_BYTES:
        digest = hashlib.sha1(text.encode()).hexdigest()[:10]
        name = name.encode()[: MAX_NAME_BYTES - 11].decode(errors="ignore") + "_" + digest
    return name


def _write_table(df_or_results: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(df_or_results, "to_parquet") and hasattr(df_or_results, "to_csv") and hasattr(df_or_results, "layers"):
        (df_or_results.to_parquet if path.suffix == ".parquet" else df_or_results.to_csv)(path)
        return
    if path.suffix == ".parquet":
        df_or_results.to_parquet(path, index=False)
    else:
        df_or_results.to_csv(path, index=False)


def _cmd_analyze(args: argparse.Namespace) -> int:
    import spectra

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix not in (".parquet", ".csv"):
        raise ValueError(f"--out must end in .parquet or .csv, got {out.name!r}")
    if out is not None:
        _check_out_file(out)
    _check_out(out, args.force)
    plot_dir = Path(args.plot) if args.plot else None
    if plot_dir is not None:
        if plot_dir.is_dir() and any(plot_dir.iterdir()) and not args.force:
            raise FileExistsError(f"{plot_dir} exists and is not empty; pass --force to write figures into it")
        _check_writable_dir(plot_dir, "--plot")
    target = resolve_target(args.target)
    base = resolve_target(args.base) if args.base else None
    res = spectra.analyze(target, fit=args.fit, layers=args.layers, conv_slices=args.conv_slices,
                          progress=None if not args.quiet else False, base=base, workers=args.workers,
                          analyzer_options={"esd": {"spectrum": True}} if plot_dir is not None else None)
    wide = res.to_wide()
    cols = [c for c in ("layer", "view", "N", "M", "alpha", "alpha_hill", "D", "n_tail", "lambda_max",
                        "stable_rank", "num_spikes", "status", "warning") if c in wide.columns]
    import pandas as pd

    _out(fit_header(res.attrs.get("fit")))
    with pd.option_context("display.max_rows", 200, "display.width", 160, "display.precision", 4):
        _out(wide[cols].to_string(index=False) if len(wide) else "(no layers analyzed)")
    if len(wide):
        _out("summary (mean over layers, as WeightWatcher's get_summary): " + ", ".join(
            f"{k}={v:.4g}" for k, v in res.summary().items()))
    if base is not None:
        _out_deltas(res)
    skipped = res.layers[res.layers["skip_reason"].notna()]
    if len(skipped):
        _out(f"\n{len(skipped)} parameter(s) skipped: " + "; ".join(
            f"{r.layer} ({r.skip_reason})" for r in skipped.head(10).itertuples()) + (" ..." if len(skipped) > 10 else ""))
    failed = res.to_pandas().query("status == 'failed'")
    if len(failed):
        _out(f"{failed['layer'].nunique()} layer(s) failed: " + "; ".join(
            f"{r.layer}: {r.message}" for r in failed.drop_duplicates('layer').head(5).itertuples()))
    if out is not None:
        _write_table(res, out)
        _out(f"wrote {out}")
    if plot_dir is not None:
        for written in _write_analyze_figures(res, wide, plot_dir):
            _out(f"wrote {written}")
    return 0


def _out_deltas(res: Any) -> None:
    """The table of dW = W - W_base per layer view (``matrix="delta"`` rows), after the weights' table."""
    import pandas as pd

    wide = res.to_wide(matrix="delta")
    cols = [c for c in ("layer", "view", "delta_relative_norm", "delta_lambda_max", "delta_stable_rank",
                        "delta_alpha", "delta_subspace_fraction_before", "status") if c in wide.columns]
    _out(f"\ndW = W - W_base ({res.attrs.get('base')}):")
    with pd.option_context("display.max_rows", 200, "display.width", 160, "display.precision", 4):
        _out(wide[cols].to_string(index=False) if len(wide) else "(no deltas)")


MAX_ESD_FIGURES = 24
FIT_METHODS = {
    "csn": "Clauset-Shalizi-Newman KS scan with a minimum tail, spectra's default; not WeightWatcher's alpha "
           "(--fit ww reproduces WeightWatcher 0.7.7)",
    "ww": "WeightWatcher 0.7.7's fit, reproduced exactly",
    "hill": "Hill estimator at the median (TempBalance's PL_Alpha_Hill)",
}


def fit_header(fit: Any) -> str:
    """The line that names the fit method above a table of alphas, so no alpha is taken for another method's."""
    return f"alpha: fit={fit} ({FIT_METHODS.get(str(fit), 'a custom tail analyzer')})" if fit else "alpha: no fit"


def _write_analyze_figures(res: Any, wide: Any, plot_dir: Path) -> list[Path]:
    """The alpha bar chart and one ESD figure (log-log, fitted tail) per layer view, the largest layers first."""
    from types import SimpleNamespace

    from . import plot

    plot_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if len(wide) and "alpha" in wide:
        plot.plot_alpha_bars(res, path=plot_dir / "alpha_bars.png")
        written.append(plot_dir / "alpha_bars.png")
    views = wide.sort_values("N", ascending=False) if "N" in wide else wide
    for row in views.head(MAX_ESD_FIGURES).itertuples(index=False):
        layer, view = str(row.layer), str(row.view)
        try:
            evals = res.spectra(layer, view=view)[int(row.step)]
        except (ValueError, KeyError):
            continue
        fit = None
        if "alpha" in wide and row.alpha == row.alpha:  # not NaN
            fit = SimpleNamespace(alpha=row.alpha, xmin=row.xmin, xmax=row.xmax, D=row.D, n_tail=row.n_tail,
                                  method=res.attrs.get("fit"))
        path = plot_dir / f"{_safe_name(f'esd_{layer}_{view}')}.png"
        try:
            plot.plot_esd(evals, fit=fit, path=path, title=f"{layer} [{view}]")
        except (ValueError, OSError) as exc:  # one layer's figure never stops the others
            sys.stderr.write(f"spectra analyze: no ESD figure for {layer} [{view}]: {exc}\n")
            continue
        written.append(path)
    return written


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compat.weightwatcher import compare_weightwatcher, summarize_comparison

    out = Path(args.out) if args.out else None
    if out is not None:
        _check_out_file(out)
    _check_out(out, args.force)
    target = resolve_target(args.target)
    if isinstance(target, Path):
        from .checkpoints import load_state_dict

        target = load_state_dict(target)
    table = compare_weightwatcher(target, fit=args.fit)
    import pandas as pd

    with pd.option_context("display.width", 160, "display.precision", 3):
        _out(summarize_comparison(table).to_string(index=False))
    if out is not None:
        _write_table(table, out)
        _out(f"wrote {out}")
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    from .plugins import get_plugin_manager, plugin_summary

    info = plugin_summary(get_plugin_manager())
    _out("plugins:")
    for name, kind in info["plugins"]:
        _out(f"  {name}  ({kind})")
    _out("analyzers:")
    for name, plugin in info["analyzers"]:
        _out(f"  {name}  [from {plugin}]")
    _out("experiments:")
    for name, plugin in info["experiments"]:
        _out(f"  {name}  [from {plugin}]")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from . import experiments

    preset = args.preset
    if args.quick:
        preset = "quick"
    if args.full:
        preset = "paper"
    overrides: dict[str, Any] = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        overrides[key.strip()] = value.strip()
    for key in ("seed", "repeats", "device"):
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    out = Path(args.out) if args.out else Path(f"spectra-out-{preset}")
    report = experiments.run(args.experiment, preset=preset, out=out, force=args.force,
                             progress=None if not args.quiet else False, **overrides)
    claims = getattr(report, "claims", None)
    if claims is not None and len(claims) and {"claim", "verdict"} <= set(claims.columns):
        _out(_claims_summary(claims))
    _out(f"report: {Path(out) / 'report.md'}")
    return 0


def _claims_summary(claims: Any) -> str:
    """One line per claim: its verdict and, for failures, the failed checks' measured values (shortened)."""
    lines = []
    for cid, sub in claims.groupby("claim", sort=False):
        verdicts = sub["verdict"].astype(str)
        evaluated = verdicts[verdicts.isin(["PASS", "FAIL"])]
        undecided = verdicts[~verdicts.isin(["PASS", "FAIL", "info", "not evaluated"])]
        if (evaluated == "FAIL").any():
            verdict = "FAIL"
        elif len(undecided):  # e.g. "not enough repeats to judge": never shown as PASS
            verdict = str(undecided.iloc[0])
        else:
            verdict = "not evaluated" if evaluated.empty else "PASS"
        line = f"claim {cid:>3}: {verdict}"
        if verdict == "FAIL":
            failed = sub[verdicts == "FAIL"]
            detail = "; ".join(f"{r.check}: {str(r.measured)[:60]} (want {str(r.tolerance)[:40]})"
                               for r in failed.itertuples()) if "check" in sub else ""
            line += f"  [{detail}]" if detail else ""
        lines.append(line)
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(prog="spectra", description="Spectral diagnostics of PyTorch models.",
                                epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("reproduce", help="run the bundled paper reproduction (default preset: quick)")
    r.add_argument("--experiment", default="twolayer", help="registered experiment (default: twolayer)")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--preset", default="quick", help="preset name (quick, paper, one-step, schedule, overlaps, "
                   "losses, weightnorm, tiny)")
    g.add_argument("--quick", action="store_true", help="the quick preset (default)")
    g.add_argument("--full", action="store_true", help="the paper preset (full configuration)")
    r.add_argument("--out", help="output directory (default: spectra-out-PRESET)")
    r.add_argument("--seed", type=int)
    r.add_argument("--repeats", type=int)
    r.add_argument("--device", choices=("cpu", "cuda"))
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any config value (repeatable)")
    r.add_argument("--force", action="store_true", help="write into an existing, non-empty output directory")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=_cmd_reproduce)

    a = sub.add_parser("analyze", help="analyze a checkpoint/state_dict or module:callable")
    a.add_argument("target", metavar="PATH_OR_MODULE")
    a.add_argument("--out", help="write the tidy table (.parquet or .csv)")
    a.add_argument("--plot", metavar="DIR", help="write PNG figures to DIR")
    a.add_argument("--fit", default="csn", choices=("csn", "ww", "hill"))
    a.add_argument("--layers", help="glob of layer names to analyze")
    a.add_argument("--conv-slices", default="pooled", choices=("pooled", "separate"))
    a.add_argument("--base", metavar="PATH", help="also analyze dW = W - W_base against this base checkpoint "
                   "(or module:callable): rows with matrix=delta")
    a.add_argument("--force", action="store_true", help="overwrite --out and the --plot figures")
    a.add_argument("--workers", type=int, default=1, metavar="N",
                   help="analyze the layers in N worker processes (default 1: in this process; same results)")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=_cmd_analyze)

    c = sub.add_parser("compare-ww", help="cross-check against WeightWatcher 0.7.7, layer by layer")
    c.add_argument("target", metavar="PATH_OR_MODULE")
    c.add_argument("--out", help="write the full table (.csv or .parquet)")
    c.add_argument("--fit", default="ww", choices=("csn", "ww", "hill"))
    c.add_argument("--force", action="store_true")
    c.set_defaults(func=_cmd_compare)

    pl = sub.add_parser("plugins", help="list plugins, analyzers and experiments")
    pl.set_defaults(func=_cmd_plugins)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spectra`` console script. Returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, FileExistsError, ValueError, TypeError, ImportError, RuntimeError) as exc:
        sys.stderr.write(f"spectra {args.command}: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"spectra {args.command}: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
