"""deploy/: the manifests validate against Kubernetes' schemas and would pass the "restricted"
Pod Security Standard; the image runs as the numeric user the manifests name."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
MANIFESTS = sorted(DEPLOY.glob("*.yaml"))
#: the oldest version the manifests' comments promise, and the newest kubernetes-validate ships
VERSIONS = ("1.29.0", "1.37.0")
UID = 10001


def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield path.name, doc


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for name, doc in documents():
        kind = doc["kind"]
        if kind == "Pod":
            specs.append((name, doc["spec"]))
        elif kind == "Job":
            specs.append((name, doc["spec"]["template"]["spec"]))
        elif kind == "CronJob":
            specs.append((name, doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return specs


def validator() -> str:
    found = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubernetes-validate"
    )
    assert found, "kubernetes-validate is in the test extra: pip install -e '.[test]'"
    return found


@pytest.mark.slow
@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_passes_kubernetes_validate_strict(version: str) -> None:
    result = subprocess.run(
        [validator(), "--strict", "-k", version, *map(str, MANIFESTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == sum(1 for _ in documents())


@pytest.mark.slow
def test_strict_validation_rejects_a_field_kubernetes_does_not_know(tmp_path: Path) -> None:
    broken = tmp_path / "job.yaml"
    text = (DEPLOY / "sharded-indexed-job.yaml").read_text()
    broken.write_text(
        text.replace("backoffLimitPerIndex: 3", "backoffLimitPerIndex: 3\n  retriesPerShard: 3")
    )
    result = subprocess.run(
        [validator(), "--strict", "-k", VERSIONS[-1], str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "retriesPerShard" in result.stdout + result.stderr


def test_there_are_manifests_with_pods() -> None:
    assert {name for name, _ in pod_specs()} >= {"nightly-sync-cronjob.yaml", "sharded-indexed-job.yaml"}


@pytest.mark.parametrize(("name", "spec"), pod_specs(), ids=[name for name, _ in pod_specs()])
def test_pods_meet_the_restricted_pod_security_standard(name: str, spec: dict[str, Any]) -> None:
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == UID and pod["runAsGroup"] == UID
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in spec.get("initContainers", []) + spec["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context.get("privileged") is not True and "add" not in context["capabilities"]
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys() <= resources["limits"].keys()
    for volume in spec["volumes"]:
        assert volume.keys() - {"name"} <= {"persistentVolumeClaim", "emptyDir", "secret", "configMap"}
    assert not any(key.startswith("host") for key in spec)


@pytest.mark.parametrize("name", ["nightly-sync-cronjob.yaml", "sharded-indexed-job.yaml"])
def test_jobs_clean_up_and_know_bulkpatchs_exit_codes(name: str) -> None:
    (doc,) = yaml.safe_load_all((DEPLOY / name).read_text())
    job = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    assert job["ttlSecondsAfterFinished"] > 0
    # podFailurePolicy is only allowed with restartPolicy: Never.
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    rules = job["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    on_config_error = rules[1]
    assert on_config_error["action"] in ("FailJob", "FailIndex")
    assert on_config_error["onExitCodes"] == {"containerName": "bulkpatch", "operator": "In", "values": [2]}
    if on_config_error["action"] == "FailIndex":
        assert job["backoffLimitPerIndex"] >= 1  # FailIndex needs it
    if doc["kind"] == "CronJob":
        assert doc["spec"]["timeZone"]
    assert re.search(r">= 1\.29", (DEPLOY / name).read_text())  # the version it needs, said


def test_the_image_runs_as_the_numeric_user_the_manifests_name() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(rf"^USER {UID}:{UID}$", dockerfile, re.MULTILINE)
    assert f"--uid {UID}" in dockerfile
    ignored = (DEPLOY.parent / ".dockerignore").read_text().split()
    assert {"build/", "*.egg-info", ".venv", ".git"} <= set(ignored)


ROOT = Path(__file__).resolve().parent.parent


def cron_line(text: str) -> str:
    lines = [line for line in text.splitlines() if re.match(r"\d+ \d+ \* \* \*\s", line)]
    assert len(lines) == 1, lines
    return lines[0]


def test_the_readme_and_the_example_give_the_same_line_with_an_absolute_bulkpatch() -> None:
    readme = cron_line((ROOT / "README.md").read_text())
    assert readme == cron_line((ROOT / "deploy" / "crontab.example").read_text())
    command = readme.split("&& ")[-1].split()[0]
    assert command.startswith("/") and command.endswith("/bin/bulkpatch")
    assert "must *export*" not in (ROOT / "README.md").read_text()


@pytest.mark.slow
def test_the_line_runs_under_crons_environment(tmp_path: Path) -> None:
    env_file = tmp_path / "bulkpatch.env"
    env_file.write_text("BULKPATCH_BASE_URL=http://127.0.0.1:9\n")
    source = tmp_path / "in.csv"
    source.write_text("workload_id,name\nw1,a\n")
    bulkpatch = shutil.which("bulkpatch", path=str(Path(sys.executable).parent))
    assert bulkpatch is not None
    line = cron_line((ROOT / "deploy" / "crontab.example").read_text())
    command = line.split(None, 5)[5]
    prefix, _, run = command.partition(" && /")
    run = "/" + run
    # The same prefix, then this venv's bulkpatch on a dry run of a small input.
    shell = f"{prefix.replace('/etc/bulkpatch.env', str(env_file))} && {bulkpatch} run {source} --dry-run"
    done = subprocess.run(
        ["/bin/sh", "-c", shell],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "PATCH http://127.0.0.1:9/api/" in done.stdout  # the base URL came from the env file
    assert run.split()[0].endswith("/bin/bulkpatch")
