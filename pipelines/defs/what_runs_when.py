"""The "what runs when" page of the manual, generated from the `Definitions`.

``python -m pipelines.defs.what_runs_when > docs/what-runs-when.md`` rewrites it; a test fails when the page
and the definitions disagree, so the page cannot go stale.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import yaml

INSTANCE_YAML = Path(__file__).resolve().parents[1] / "instance" / "dagster.yaml"


def _first_sentence(text: str | None) -> str:
    text = " ".join((text or "").split())
    head, dot, _ = text.partition(". ")
    return (head + dot).strip().replace("|", "\\|")


def _every(seconds: int | None) -> str:
    if not seconds:
        return "every tick"
    return f"every {seconds // 60} min" if seconds % 60 == 0 and seconds >= 120 else f"every {seconds} s"


def _lane_limits() -> dict[tuple[str, str], int]:
    runs = yaml.safe_load(INSTANCE_YAML.read_text())["concurrency"]["runs"]
    return {(lim["key"], lim["value"]): lim["limit"] for lim in runs.get("tag_concurrency_limits", [])}


def render(defs: dg.Definitions) -> str:
    """The page as Markdown: triggers (sensors and schedules), then jobs with their assets, pools and lanes."""
    repo = defs.get_repository_def()
    lines = [
        "# What runs when",
        "",
        "Generated from the code location's `Definitions` by `python -m pipelines.defs.what_runs_when`;",
        "a test keeps it current. Times are UTC.",
        "",
        "## Triggers",
        "",
        "| trigger | kind | when | starts | default | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for s in sorted(repo.sensor_defs, key=lambda s: s.name):
        jobs = ", ".join(f"`{t.job_name}`" for t in s.targets) or "no run"
        status = "on" if s.default_status == dg.DefaultSensorStatus.RUNNING else "off"
        lines.append(f"| `{s.name}` | sensor | {_every(s.minimum_interval_seconds)} | {jobs} | {status} "
                     f"| {_first_sentence(s.description)} |")
    for s in sorted(repo.schedule_defs, key=lambda s: s.name):
        status = "on" if s.default_status == dg.DefaultScheduleStatus.RUNNING else "off"
        lines.append(f"| `{s.name}` | schedule | `{s.cron_schedule}` | `{s.job_name}` | {status} "
                     f"| {_first_sentence(s.description)} |")
    pools = {}
    for a in defs.assets or []:
        if isinstance(a, dg.AssetsDefinition):
            for key in a.keys:
                pools[key.to_user_string()] = a.op.pool
    limits = _lane_limits()
    lines += ["", "## Jobs", "", "| job | assets | pool | run-queue lane (limit) |", "|---|---|---|---|"]
    for job in sorted(repo.get_all_jobs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue
        keys = sorted(k.to_user_string() for k in job.asset_layer.executable_asset_keys)
        job_pools = sorted({pools[k] for k in keys if pools.get(k)})
        lane = job.tags.get("sessionlake/queue")
        lane_txt = f"`{lane}` ({limits.get(('sessionlake/queue', lane), '-')})" if lane else "-"
        lines.append(f"| `{job.name}` | {', '.join(f'`{k}`' for k in keys)} | "
                     f"{', '.join(f'`{p}`' for p in job_pools) or '-'} | {lane_txt} |")
    lines += ["", "Every pool runs one step at a time across runs (`concurrency.pools.default_limit: 1` in the",
              "shipped `dagster.yaml`)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from pipelines.definitions import defs

    print(render(defs), end="")
