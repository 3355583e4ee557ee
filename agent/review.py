"""The review side: what a pull request that changes params.yaml does to the metrics and to the infra plan.

Run in CI after `dvc repro` on the PR's head (.github/workflows/agent-review.yml), it writes one markdown
report, as CML reports do: `dvc metrics diff <base> --md` (the committed metrics of the base commit vs the
workspace's freshly reproduced ones) and the offline infra plan diff between the base's params.yaml and the
PR's, against the reproduced manifest. `--comment` keeps one sticky comment on the PR up to date.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from ruamel.yaml import YAML

from agent.git_ops import GitError, show_file
from agent.plan_diff import markdown, plan_change
from infopt.manifest import ManifestError, load_manifest
from infopt.params import ParamsError, load_params, parse_params

REVIEW_MARKER = "<!-- infopt-agent review -->"


def metrics_diff(repo: Path, base: str, dvc: str = "dvc") -> str:
    done = subprocess.run([dvc, "metrics", "diff", base, "--md"], cwd=repo, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return (
            f"`dvc metrics diff {base}` failed ({done.returncode}):\n\n```\n{(done.stderr or done.stdout)[-1500:]}\n```"
        )
    return done.stdout.strip() or "No metric changed."


def review_report(
    repo: Path,
    base: str,
    *,
    stack: str = "prod",
    params_file: str = "params.yaml",
    manifest_path: Path | None = None,
    stacks_dir: Path | None = None,
    dvc: str = "dvc",
) -> str:
    """The review comment's markdown (the sections say what failed instead of raising)."""
    sections = [REVIEW_MARKER, f"## infopt review: params.yaml against `{base}`", ""]
    sections += ["### `dvc metrics diff`", "", metrics_diff(repo, base, dvc), ""]
    sections += [f"### Infra plan diff (stack `{stack}`)", ""]
    try:
        before = parse_params(YAML(typ="safe").load(show_file(repo, base, params_file)), f"{base}:{params_file}")
        after = load_params(repo / params_file)
        manifest_path = manifest_path or repo / "artifacts" / "manifest.json"
        diff = plan_change(before, after, load_manifest(manifest_path), stack, stacks_dir or repo / "stacks")
        sections.append(markdown(diff))
    except (GitError, ParamsError, ManifestError, ValueError, OSError) as error:
        sections.append(f"The plan could not be made: {type(error).__name__}: {error}")
    sections += ["", "<sub>Posted by `infopt agent review`.</sub>", ""]
    return "\n".join(sections)
