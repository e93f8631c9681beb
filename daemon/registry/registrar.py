"""The pipeline's registration step: a trained checkpoint -> a fenced registry version.

Also answers the two registry questions a run asks before training: which model to
warm-start from, and how many models the config has.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon.export.job import ExportResult
from daemon.keys import parse_config_key
from daemon.registry.registry import ModelRegistry
from daemon.settings import TrainingSettings
from daemon.training.step import Parent

FenceCheck = Callable[[str, int | None], None]


class Registrar:
    def __init__(
        self,
        models: ModelRegistry,
        training: TrainingSettings,
        source_paths: Callable[[], list[Path]],
        fence_check: FenceCheck | None = None,
    ) -> None:
        self.models = models
        self.training = training
        self.source_paths = source_paths
        # A check of the token against the newest one the lock service issued (Redis), run
        # inside the registry's write transaction; None with node-local file locks.
        self.fence_check = fence_check

    def parent(self, config: str, dest: Path, *, now: datetime) -> Parent | None:
        """The fleet's production model of ``config`` (else its newest candidate; never a
        rejected or corrupt one), fetched to ``dest`` and verified; None: train from scratch.

        Blocking (copies and hashes the checkpoint): run it in a worker thread."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        rec = self.models.warm_start(config, dest, now=now)
        return Parent(rec.model_id, dest) if rec is not None else None

    def model_count(self, config: str) -> int:
        return len(self.models.list_models(config=config))

    def register(
        self,
        config: str,
        checkpoint: Path,
        export: ExportResult,
        parent: Parent | None,
        token: int | None,
        run_id: str,
        metrics: dict[str, Any],
    ) -> str:
        """Blocking (copies and hashes the checkpoint): run it in a worker thread."""
        board, n = parse_config_key(config)
        t = self.training
        return self.models.register(
            model_path=checkpoint,
            board_type=board,
            num_players=n,
            training_config={
                "channels": t.channels,
                "blocks": t.blocks,
                "epochs": t.epochs,
                "batch_size": t.batch_size,
                "learning_rate": t.learning_rate,
                "device": t.device,
            },
            metrics=metrics,
            source_data_paths=[str(p) for p in self.source_paths()],
            parent_model_id=parent.model_id if parent else None,
            fencing_token=token,
            run_id=run_id,
            data_path=Path(export.output),
            source_snapshot=export.snapshot,
            fence_check=self.fence_check,
        )
