"""Write the results: docs/benchmarks.json, docs/benchmarks.md, docs/benchmarks/*.png."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Context, Figure, median

COLORS = {"mycert": "#1f5fa8", "reference": "#9a9a9a", "met": "#2e8b57", "missed": "#c0392b"}


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _met(figure: Figure) -> str:
    return {True: "**yes**", False: "**no**", None: "—"}[figure.met]


def _downsample(timeline: list[tuple[float, int]], points: int = 200) -> list[tuple[float, int]]:
    step = max(1, len(timeline) // points)
    return timeline[::step] + timeline[-1:]


# --- Plots ------------------------------------------------------------------------------------


def _plots(ctx: Context, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    made: list[str] = []
    plt.rcParams.update({"figure.dpi": 110, "font.size": 9, "axes.spines.top": False})

    goals = [f for f in ctx.figures if f.met is not None and "goal_index" in f.details]
    if goals:
        fig, ax = plt.subplots(figsize=(13, 0.55 * len(goals) + 1.4))
        ordered = goals[::-1]
        index = [f.details["goal_index"] for f in ordered]
        colors = [COLORS["met"] if f.met else COLORS["missed"] for f in ordered]
        ax.barh(range(len(ordered)), index, color=colors)
        # The spread of a figure measured in several runs (issue 24 §2): min to max.
        for row, f in enumerate(ordered):
            low, high = f.details.get("ratio_min"), f.details.get("ratio_max")
            if low is not None and high is not None and f.ratio:
                scale = f.details["goal_index"] / f.ratio
                ax.errorbar(
                    f.details["goal_index"],
                    row,
                    xerr=[
                        [f.details["goal_index"] - low * scale],
                        [high * scale - f.details["goal_index"]],
                    ],
                    fmt="none",
                    ecolor="black",
                    capsize=4,
                    linewidth=1,
                )
        ax.axvline(1, color="black", linewidth=1)
        ax.set_xscale("log")
        ax.set_xlim(min(0.1, min(index) / 2), max(10, max(index) * 1.5))
        # The figures and their goals as the right-hand axis' tick labels, wrapped: unlike
        # free annotations, tick labels are measured by tight_layout, so none runs off.
        right = ax.twinx()
        right.set_ylim(ax.get_ylim())
        right.set_yticks(
            range(len(ordered)),
            [textwrap.fill(_goal_label(f), width=48) for f in ordered],
        )
        for tick, f in zip(right.get_yticklabels(), ordered, strict=True):
            tick.set_color(COLORS["met"] if f.met else COLORS["missed"])
            tick.set_fontsize(8)
        right.tick_params(axis="y", length=0)
        right.spines["right"].set_visible(False)
        ax.set_yticks(range(len(ordered)), [textwrap.fill(f.title, width=60) for f in ordered])
        ax.set_xlabel("distance to the goal (1 = exactly the goal; left of the line: met)")
        ax.set_title("Goals: green met, red missed")
        fig.tight_layout()
        fig.savefig(folder / "summary.png")
        plt.close(fig)
        made.append("summary.png")

    pipeline = ctx.raw.get("pipeline") or {}
    if pipeline:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        names = list(pipeline)
        x = range(len(names))
        for offset, side, color in (
            (-0.2, "bare", COLORS["reference"]),
            (0.2, "mycert", COLORS["mycert"]),
        ):
            keygen = [pipeline[k]["median"]["keygen"] for k in names]
            rest = [pipeline[k]["median"][f"{side}_rest"] for k in names]
            xs = [i + offset for i in x]
            ax.bar(xs, keygen, 0.38, color="#d9d9d9", edgecolor=color)
            ax.bar(
                xs,
                rest,
                0.38,
                bottom=keygen,
                color=color,
                label=f"{'bare cryptography' if side == 'bare' else 'MyCert request_issue'}: after keygen",
            )
            for xi, k, r in zip(xs, keygen, rest, strict=True):
                ax.text(xi, k + r, f"{k + r:.0f}", ha="center", va="bottom")
        from matplotlib.patches import Patch

        handles, _labels = ax.get_legend_handles_labels()
        handles.append(
            Patch(
                facecolor="#d9d9d9",
                edgecolor="grey",
                label="key generation (the same key for both)",
            )
        )
        ax.set_xticks(list(x), names)
        ax.set_ylabel("ms per certificate (median keygen + median rest)")
        ax.set_title("Per-certificate pipeline: MyCert vs bare cryptography")
        ax.legend(handles=handles, fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "pipeline.png")
        plt.close(fig)
        made.append("pipeline.png")

    population = ctx.raw.get("population") or {}
    if population:
        fig, ax = plt.subplots(figsize=(7, 3.8))
        palette = ["#1f5fa8", "#e67e22", "#2e8b57"]
        for row, (color, (key_type, result)) in enumerate(
            zip(palette, population.items(), strict=False)
        ):
            times = [t for t, _ in result["timeline"]]
            done = [n / result["expected_emails"] * 100 for _, n in result["timeline"]]
            ax.plot(
                times,
                done,
                color=color,
                label=f"{key_type}, N={result['count']}: {result['elapsed_seconds']:.0f} s",
            )
            ax.axvline(result["reference_seconds"], color=color, linestyle="--", linewidth=0.9)
            ax.text(
                result["reference_seconds"],
                96 - 7 * row,
                f" reference {key_type}: {result['reference_seconds']:.0f} s",
                color=color,
                fontsize=7,
            )
        ax.set_xlabel("seconds since the first submission")
        ax.set_ylabel("e-mails accepted by the relay (%)")
        ax.set_title("Whole population: e-mails accepted over time (dashed: reference)")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.45, 0.75))
        fig.tight_layout()
        fig.savefig(folder / "population.png")
        plt.close(fig)
        made.append("population.png")

    crl = ctx.raw.get("crl") or {}
    if crl:
        fig, ax = plt.subplots(figsize=(7, 3.8))
        sizes = [int(s) for s in crl]
        series = (
            ("crl_publish_ms", "MyCert crl_publish, re-publication", COLORS["mycert"], "-"),
            (
                "crl_after_revocation_ms",
                "MyCert crl_publish, after a revocation",
                COLORS["mycert"],
                ":",
            ),
            ("crl_full_ms", "MyCert crl_publish, full rebuild (cold)", COLORS["mycert"], "--"),
            ("build_crl_ms", "mycert.pki.build_crl", "#6fa8dc", "-"),
            ("openssl_ms", "openssl ca -gencrl", "black", "--"),
            ("pyca_loop_ms", "pyca add_revoked_certificate loop", COLORS["missed"], ":"),
        )
        for key, label, color, style in series:
            if not all(key in crl[str(s)] for s in sizes):
                continue  # a run before the full rebuild was measured
            ax.plot(
                sizes,
                [median(crl[str(s)][key]) for s in sizes],
                style,
                marker="o",
                color=color,
                label=label,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("revoked entries")
        ax.set_ylabel("ms to re-sign (median)")
        ax.set_title("CRL re-signing time")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "crl.png")
        plt.close(fig)
        made.append("crl.png")

    ocsp = ctx.raw.get("ocsp")
    if ocsp:
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
        ocsp_labels = {
            "mycert": "MyCert\nresponder",
            "gunicorn": "MyCert\n(gunicorn)",
            "nginx": "nginx\ncache",
            "openssl": "openssl ocsp\n(1 process)",
        }
        sides = [side for side in ocsp_labels if ocsp.get(side)]
        names = [ocsp_labels[side] for side in sides]
        rps = [median([r["ok_rps"] for r in ocsp[side]]) for side in sides]
        colors = [COLORS["reference"] if side == "openssl" else COLORS["mycert"] for side in sides]
        left.bar(names, rps, color=colors)
        for i, v in enumerate(rps):
            left.text(i, v, f"{v:,.0f}", ha="center", va="bottom")
        left.set_ylabel("responses per second")
        left.set_title("Throughput")
        width = 0.38
        for offset, q in ((-width / 2, "p50"), (width / 2, "p99")):
            values = [median([r[f"{q}_ms"] for r in ocsp[side]]) for side in sides]
            right.bar([i + offset for i in range(len(sides))], values, width, label=q)
        right.set_xticks(range(len(sides)), names)
        right.set_ylabel("ms")
        right.set_title(f"Latency, {ocsp['connections']} connections")
        right.legend()
        fig.tight_layout()
        fig.savefig(folder / "ocsp.png")
        plt.close(fig)
        made.append("ocsp.png")

    web = ctx.raw.get("web")
    if web:
        summary = web["summary"]
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=False)
        for ax, mode, title in (
            (axes[0], "users", f"{web['clients']} users, ~{web['think_seconds']:.0f} s think time"),
            (axes[1], "closed", f"{web['clients']} clients, no pause (saturation)"),
        ):
            groups = ["floor", "page", "post"]
            labels = ["stack floor\n(CA cert)", "GET /request/", "POST /request/"]
            for offset, q, color in (
                (-0.27, "p50", "#9fc5e8"),
                (0, "p95", COLORS["mycert"]),
                (0.27, "p99", "#0b2f5a"),
            ):
                ax.bar(
                    [i + offset for i in range(3)],
                    [summary[mode][g][q] for g in groups],
                    0.26,
                    label=q,
                    color=color,
                )
            ax.axhline(50, color=COLORS["missed"], linestyle="--", linewidth=0.9)
            ax.text(2.4, 50, "50 ms", color=COLORS["missed"], va="bottom", ha="right")
            ax.set_xticks(range(3), labels)
            ax.set_ylabel("latency, ms")
            ax.set_title(title)
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "web.png")
        plt.close(fig)
        made.append("web.png")
    return made


# --- Markdown ----------------------------------------------------------------------------------


def _goal_label(figure: Figure) -> str:
    """The summary plot's right-hand label: value, goal, and the spread of several runs."""
    label = f"{_fmt(figure.value)} {figure.unit} — goal {figure.goal}"
    low, high = figure.details.get("ratio_min"), figure.details.get("ratio_max")
    if low is not None and high is not None:
        label += f" ({figure.runs} runs: {low:.2f}–{high:.2f}×)"
    return label


def _ratio(figure: Figure) -> str:
    """The ratio, with the spread of its runs when there were several (issue 24 §2)."""
    low, high = figure.details.get("ratio_min"), figure.details.get("ratio_max")
    if low is None or high is None:
        return f"{figure.ratio:.2f}×"
    return f"{figure.ratio:.2f}× (median of {figure.runs}; {low:.2f}–{high:.2f}×)"


def _table(figures: list[Figure]) -> list[str]:
    lines = [
        "| figure | value | reference | ratio | goal | met |",
        "| --- | ---: | ---: | ---: | --- | :---: |",
    ]
    for f in figures:
        lines.append(
            f"| {f.title} | {_fmt(f.value)} {f.unit} | {_fmt(f.reference)} {f.unit} "
            f"({f.reference_label}) | {_ratio(f)} | {f.goal} | {_met(f)} |"
        )
    return lines


def _machine(info: dict[str, Any]) -> list[str]:
    keys = (
        ("cpu", "CPU"), ("cores", "cores"), ("ram_gib", "RAM (GiB)"), ("kernel", "kernel"),
        ("python", "Python"), ("openssl_cli", "OpenSSL (CLI)"), ("openssl_pyca", "OpenSSL (cryptography)"),
        ("cryptography", "cryptography"), ("django", "Django"), ("celery", "Celery"),
        ("gunicorn", "gunicorn"), ("postgresql", "PostgreSQL"), ("redis", "Redis"),
        ("gpg", "GnuPG"), ("wrk", "wrk"), ("h2load", "h2load"), ("load_average", "load average (1, 5, 15 min) at start"),
    )  # fmt: skip
    lines = ["| | |", "| --- | --- |"]
    for key, label in keys:
        if key in info:
            lines.append(f"| {label} | {info[key]} |")
    return lines


def _commit() -> str:
    """The commit measured, with ``-dirty`` when the tree had uncommitted changes."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "HEAD")
    # The run's own output (docs/benchmarks*) is not a change to what was measured.
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/benchmarks*")
    return f"{commit}-dirty" if commit and dirty else commit or "unknown"


def write(ctx: Context, out: Path, *, quick: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    plots = _plots(ctx, out / "benchmarks")
    raw = ctx.raw
    population = raw.get("population") or {}
    data = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": _commit(),
        "quick": quick,
        "command": "make benchmarks  (.venv/bin/python -m benchmarks.run)",
        "total_seconds": raw.get("total_seconds"),
        "machine": raw.get("machine_before"),
        "machine_after": raw.get("machine_after"),
        "figures": [f.as_dict() for f in ctx.figures],
        "pipeline": {k: {kk: v[kk] for kk in ("median", "mean_bare_total_ms", "mean_mycert_total_ms", "paired_runs", "independent_runs")} for k, v in (raw.get("pipeline") or {}).items()},
        "population": {k: {**{kk: vv for kk, vv in v.items() if kk != "timeline"}, "timeline": _downsample(v["timeline"])} for k, v in population.items()},
        "population_floor": raw.get("population_floor"),
        "population_growth": raw.get("population_growth"),
        "roundtrips": raw.get("roundtrips"),
        "crl": raw.get("crl"),
        "ocsp": raw.get("ocsp"),
        "relying": raw.get("relying"),
        "web": {k: v for k, v in (raw.get("web") or {}).items() if k in ("summary", "clients", "think_seconds", "server")},
        "scale": _scale_data(raw.get("scale")),
        "log": ctx.log_lines,
    }  # fmt: skip
    (out / "benchmarks.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    md = _markdown(ctx, plots, data)
    (out / "benchmarks.md").write_text(md)


def _scale_data(scale: dict[str, Any] | None) -> dict[str, Any] | None:
    """benchmarks/fig_scale.py's results, each statement cut to its first 300 characters
    and its plan left out (the log has the figures, the JSON the shapes)."""
    if not scale:
        return None

    def statements(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"sql": s["sql"][:300], "ms": s["ms"], "seq_scans": s["seq_scans"]} for s in found]

    return {
        **scale,
        "beat": {
            name: {**task, "statements": statements(task["statements"])}
            for name, task in scale["beat"].items()
        },
        "admin": {
            name: {**page, "slowest": statements(page["slowest"])}
            for name, page in scale["admin"].items()
        },
    }


def _markdown(ctx: Context, plots: list[str], data: dict[str, Any]) -> str:
    from benchmarks import narrative

    figures = ctx.figures
    goal_bearing = [f for f in figures if f.met is not None]
    lines = [
        "# MyCert benchmarks",
        "",
        "Generated by `make benchmarks` (`.venv/bin/python -m benchmarks.run`) on "
        f"{data['generated']}, in {(data['total_seconds'] or 0) / 60:.1f} minutes"
        + (" — **quick mode, small N: not the reference figures**" if data["quick"] else "")
        + ". Every reference is measured in the same run, on the same machine, right before "
        "or after its figure; each value is the median of its runs unless said otherwise. "
        "Machine-readable: [benchmarks.json](benchmarks.json).",
        "",
    ]
    if "summary.png" in plots:
        lines += ["![goals](benchmarks/summary.png)", ""]
    lines += [
        "## Goals",
        "",
        *_table(goal_bearing),
        "",
        "## Machine",
        "",
        *_machine(data["machine"] or {}),
        "",
    ]
    lines += narrative.machine_note(data)
    lines += ["## All figures", "", *_table(figures), ""]
    lines += ["Notes per figure:", ""]
    lines += [f"- **{f.title}** — {f.notes}" for f in figures if f.notes]
    lines += [""]
    lines += narrative.sections(data, plots)
    return "\n".join(lines) + "\n"


def rebuild(path: Path) -> None:
    """Write the Markdown and the plots again from a saved benchmarks.json (no new run)."""
    from benchmarks.env import make_env, remove_env

    data = json.loads(path.read_text())
    env = make_env()
    ctx = Context(env=env, quick=data["quick"])
    ctx.figures = [Figure(**f) for f in data["figures"]]
    ctx.raw = {
        "machine_before": data["machine"],
        "machine_after": data.get("machine_after"),
        "total_seconds": data["total_seconds"],
        "pipeline": data["pipeline"],
        "population": data["population"],
        "population_floor": data.get("population_floor"),
        "population_growth": data.get("population_growth"),
        "roundtrips": data.get("roundtrips"),
        "crl": data["crl"],
        "ocsp": data["ocsp"],
        "web": data["web"],
        "relying": data.get("relying"),
        "scale": data.get("scale"),
    }
    ctx.log_lines = data.get("log", [])
    plots = _plots(ctx, path.parent / "benchmarks")
    path.parent.joinpath("benchmarks.md").write_text(_markdown(ctx, plots, data))
    remove_env(env)


if __name__ == "__main__":
    import sys

    rebuild(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks.json"))
