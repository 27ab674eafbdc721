"""Champion stores: where the current champion is read from and recorded.

`promote` talks to one `ChampionStore`, chosen once by `champion_store`:
- `MlflowChampionStore`: the MLflow registry; the champion is the version holding the alias,
  a promotion moves the alias, each decision is tagged on the candidate version, and a missing
  serving/model is restored from the version's stored package.
- `LocalChampionStore` (SKINDX_TRACKING=off): no registry; the champion is whatever intact
  package serving/model holds, so promoting is installing.

A store may offer `decision_lock()`: `promote` holds it from reading the champion to recording
the decision, so that two pipelines promoting into one shared registry at the same time decide
one after the other (the second against the first's outcome) instead of both against the same
old champion, the later alias write silently undoing the earlier one.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from skindx import tracking
from skindx.evaluation.predictions import PREDICTIONS_FILE, Predictions, read_predictions
from skindx.inference.hashing import sha256_file
from skindx.inference.model import CARD_DIGEST_KEY, CARD_FILE, ONNX_FILE, card_digest
from skindx.registry.errors import RegistryError
from skindx.registry.install import installed_card, serving_version
from skindx.registry.registration import (
    METRIC_TAG_PREFIX,
    PACKAGE_ARTIFACTS_TAG,
    mlflow_client,
    restore_version,
)
from skindx.registry.rule import metric_value


@dataclass(frozen=True)
class Champion:
    version: str
    value: float | None
    run_id: str | None = None


class ChampionStore(Protocol):
    """What `promote` needs from wherever the champion lives."""

    uri: str | None  # logged as the decision's "registry"
    note: str  # appended to every decision's reason ("" when nothing to add)

    def candidate_version(self, card: dict[str, Any], candidate_dir: str | Path) -> str:
        """The candidate's version in this store; raises RegistryError if it is not there."""

    def champion(self, metric: str) -> Champion | None:
        """The current champion with its `metric`, or None when there is none yet."""

    def make_champion(self, version: str) -> None:
        """Record `version` as the champion (before serving/model is replaced)."""

    def restore(self, version: str, serving_dir: str | Path) -> None:
        """Put the champion `version`'s package back into `serving_dir`."""

    def record(self, version: str, record: dict[str, Any]) -> None:
        """Attach the decision to the candidate `version`."""

    def champion_predictions(self, version: str, serving_dir: str | Path) -> Predictions | str:
        """The champion's test predictions (verified against its card), or why there are none."""


def packaged_predictions(package_dir: Path, card: dict[str, Any], who: str) -> Predictions | str:
    """predictions.csv of a package whose card is `card`, checked against the card's sha256."""
    path = Path(package_dir) / PREDICTIONS_FILE
    expected = (card.get("files") or {}).get(PREDICTIONS_FILE)
    if expected is None or not path.is_file():
        return f"{who} carries no {PREDICTIONS_FILE} (packaged before predictions were kept)"
    if sha256_file(path) != expected:
        return f"{who}'s {PREDICTIONS_FILE} does not match its card's sha256"
    try:
        return read_predictions(path)
    except ValueError as exc:
        return f"{who}'s predictions are unreadable ({exc})"


# --- MLflow registry -------------------------------------------------------------------------


def registry_champion(client, registered_model: str, alias: str, metric: str) -> Champion | None:
    """The version holding `alias`, with the metric it was tagged with at registration."""
    from mlflow.exceptions import MlflowException

    try:
        holder = client.get_model_version_by_alias(registered_model, alias)
    except MlflowException as exc:
        # Only "no registered model" / "no such alias" mean no champion yet: anything else (an
        # unreachable or locked store) must not let any candidate through.
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or (
            exc.error_code == "INVALID_PARAMETER_VALUE" and f"alias {alias}" in exc.message
        ):
            return None
        raise RegistryError(
            f"cannot read @{alias} of {registered_model!r} from the MLflow registry "
            f"({exc.error_code}: {exc.message}); fix the store and rerun the promote stage"
        ) from exc
    tag = holder.tags.get(f"{METRIC_TAG_PREFIX}{metric}")
    value = float(tag) if tag not in (None, "", "nan") else None
    return Champion(str(holder.version), value, holder.run_id)


def check_registered_package(client, registered_model: str, version: str, card: dict) -> None:
    """The candidate must be the package registered as `version`: its model.onnx (onnx_sha256
    tag) and its card as sealed at registration (card_sha256 tag, on versions that have it)."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_model_version(registered_model, version).tags
    except MlflowException as exc:
        raise RegistryError(
            f"cannot read {registered_model} v{version} from the MLflow registry "
            f"({exc.error_code}: {exc.message}); run the package stage again"
        ) from exc
    expected = {"onnx_sha256": card["files"][ONNX_FILE]}
    if "card_sha256" in tags:
        expected["card_sha256"] = card.get(CARD_DIGEST_KEY)
    for tag, value in expected.items():
        if tags.get(tag) != value:
            raise RegistryError(
                f"the candidate ({tag} {value}) is not the package registered as "
                f"{registered_model} v{version} ({tag} {tags.get(tag)}); "
                "run the package stage again"
            )


# The decision lock of a shared MLflow registry: a registered model of this name exists while a
# promote decides. Creating it is atomic in every MLflow store (names are unique: the second
# create fails with RESOURCE_ALREADY_EXISTS), and deleting it is final, so it needs nothing
# beyond MLflow's API and the login the pipeline already has. A holder that died leaves it
# behind: after LOCK_STALE_S it is taken over; a waiter gives up after LOCK_WAIT_S.
LOCK_SUFFIX = ".promote-lock"
LOCK_WAIT_S = 600
LOCK_STALE_S = 900
LOCK_POLL_S = 1.0


class MlflowChampionStore:
    note = ""

    def __init__(
        self, registered_model: str, alias: str, mlflow_params: dict[str, Any] | None = None
    ) -> None:
        self.registered_model = registered_model
        self.alias = alias
        self.mlflow_params = mlflow_params
        self.uri = tracking.tracking_uri(mlflow_params)
        self.client = mlflow_client(mlflow_params)

    def candidate_version(self, card: dict[str, Any], candidate_dir: str | Path) -> str:
        registry = card.get("registry") or {}
        if registry.get("name") != self.registered_model or not registry.get("version"):
            raise RegistryError(
                f"{candidate_dir} is not a registered version of {self.registered_model!r} "
                f"(card registry: {registry or 'none'}); run the package stage first."
            )
        version = str(registry["version"])
        check_registered_package(self.client, self.registered_model, version, card)
        return version

    def champion(self, metric: str) -> Champion | None:
        return registry_champion(self.client, self.registered_model, self.alias, metric)

    @contextmanager
    def decision_lock(
        self, wait_s: float = LOCK_WAIT_S, stale_s: float = LOCK_STALE_S
    ) -> Iterator[None]:
        """Hold `<registered model>.promote-lock` (see LOCK_SUFFIX) while deciding."""
        from mlflow.exceptions import MlflowException

        name = f"{self.registered_model}{LOCK_SUFFIX}"
        me = f"{socket.gethostname()}:{os.getpid()}"
        deadline = time.monotonic() + wait_s
        said = False
        while True:
            try:
                self.client.create_registered_model(
                    name,
                    tags={"holder": me},
                    description=f"held while a promote stage decides on {self.registered_model}",
                )
                break
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise RegistryError(
                        f"cannot take the promotion lock {name!r} in the MLflow registry "
                        f"({exc.error_code}: {exc.message}); fix the store and rerun promote"
                    ) from exc
            try:
                held = self.client.get_registered_model(name)
            except MlflowException:
                continue  # released between our create and this read: try again
            holder = held.tags.get("holder", "unknown")
            age = time.time() - held.creation_timestamp / 1000
            if age > stale_s:
                print(
                    f"promote: taking over {name!r}: held by {holder} for {age:.0f} s "
                    f"(over {stale_s:.0f} s, its promote is gone)",
                    file=sys.stderr,
                )
                with suppress(MlflowException):
                    self.client.delete_registered_model(name)
                continue
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"another promote ({holder}) has held {name!r} for {age:.0f} s; wait for it "
                    f"and rerun, or, if none is running, delete that registered model"
                )
            if not said:
                print(f"promote: waiting for {holder}'s promote decision ({name})", file=sys.stderr)
                said = True
            time.sleep(LOCK_POLL_S)
        try:
            yield
        finally:
            with suppress(MlflowException):
                self.client.delete_registered_model(name)

    def make_champion(self, version: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.set_registered_model_alias(self.registered_model, self.alias, version)
        except MlflowException as exc:
            raise RegistryError(
                f"could not move @{self.alias} of {self.registered_model!r} to v{version} "
                f"({exc.error_code}: {exc.message}); serving/model was left unchanged"
            ) from exc

    def restore(self, version: str, serving_dir: str | Path) -> None:
        restore_version(self.registered_model, version, serving_dir, self.mlflow_params)

    def record(self, version: str, record: dict[str, Any]) -> None:
        champion = record["champion"]
        comparison = record.get("comparison") or {}
        tags = [
            ("promotion.decision", record["decision"]),
            ("promotion.reason", record["reason"][:4000]),
            ("promotion.time", record["time"]),
            ("promotion.champion_version", champion["version"] if champion else "none"),
        ]
        if comparison:
            tags.append(("promotion.rule", str(comparison.get("rule"))))
        for key in ("delta", "ci_low", "ci_high", "confidence", "p_value"):
            if comparison.get(key) is not None:
                tags.append((f"promotion.{key}", f"{comparison[key]:.6g}"))
        for key, value in tags:
            self.client.set_model_version_tag(self.registered_model, version, key, value)

    def champion_predictions(self, version: str, serving_dir: str | Path) -> Predictions | str:
        """From serving/model when it holds this version (verified), else the two files
        (card + predictions) from the version's stored package, the card checked against
        the card_sha256 it was registered with."""
        who = f"champion v{version}"
        if serving_version(serving_dir) == version:
            return packaged_predictions(Path(serving_dir), installed_card(serving_dir), who)
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        mv = self.client.get_model_version(self.registered_model, version)
        root = mv.tags.get(PACKAGE_ARTIFACTS_TAG)
        if not root or not mv.run_id:
            return f"{who} has no stored package in the registry"
        with tempfile.TemporaryDirectory() as tmp:
            try:
                for name in (CARD_FILE, PREDICTIONS_FILE):
                    mlflow.artifacts.download_artifacts(
                        run_id=mv.run_id,
                        artifact_path=f"{root}/{name}",
                        dst_path=tmp,
                        tracking_uri=self.uri,
                    )
            except (MlflowException, OSError) as exc:
                return f"{who}'s predictions could not be read from the registry ({exc})"
            card = json.loads((Path(tmp) / CARD_FILE).read_text())
            sealed = mv.tags.get("card_sha256")
            if sealed and card_digest(card) != sealed:
                return f"{who}'s stored card is not the one registered (card_sha256)"
            return packaged_predictions(Path(tmp), card, who)


# --- no registry (SKINDX_TRACKING=off) -------------------------------------------------------


def serving_champion(serving_dir: str | Path, metric: str) -> Champion | None:
    """Without MLflow (SKINDX_TRACKING=off) the champion is whatever serving/model holds."""
    card = installed_card(serving_dir)
    if card is None:
        return None
    return Champion(str(card["version"]), metric_value(card.get("metrics"), metric))


class LocalChampionStore:
    uri = None
    note = " (SKINDX_TRACKING=off: compared with serving/model, no registry alias)"

    def __init__(self, serving_dir: str | Path) -> None:
        self.serving_dir = serving_dir

    def candidate_version(self, card: dict[str, Any], candidate_dir: str | Path) -> str:
        return str(card["version"])

    def champion(self, metric: str) -> Champion | None:
        return serving_champion(self.serving_dir, metric)

    def make_champion(self, version: str) -> None:
        """Installing the package into serving/model is what makes it the champion here."""

    def restore(self, version: str, serving_dir: str | Path) -> None:
        raise RegistryError(
            f"v{version} is not in {serving_dir} and there is no registry to restore it from "
            "(SKINDX_TRACKING=off); run the package and promote stages again"
        )

    def record(self, version: str, record: dict[str, Any]) -> None:
        """The decision log is the only record without a registry."""

    def champion_predictions(self, version: str, serving_dir: str | Path) -> Predictions | str:
        card = installed_card(serving_dir)
        if card is None or str(card["version"]) != version:
            return f"{serving_dir} does not hold champion v{version}"
        return packaged_predictions(Path(serving_dir), card, f"champion v{version}")


def champion_store(
    registered_model: str,
    *,
    alias: str,
    serving_dir: str | Path,
    mlflow_params: dict[str, Any] | None = None,
) -> ChampionStore:
    """The MLflow registry, or serving/model itself when tracking is off (SKINDX_TRACKING)."""
    if tracking.tracking_enabled():
        return MlflowChampionStore(registered_model, alias, mlflow_params)
    return LocalChampionStore(serving_dir)
