"""The pipeline's training step: trainer arguments from the settings and the export, one run.

A parent checkpoint whose architecture no longer fits (settings changed) is retried once
from scratch; the lineage still names the parent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from daemon.export.job import ExportResult
from daemon.settings import TrainingSettings
from daemon.training.args import TrainerArgs
from daemon.training.runner import TrainerOutcome, TrainerRunner
from daemon.training.threads import default_threads

log = structlog.get_logger(__name__)

# Without a data tier (an export that reports none) and without pinned settings.
FALLBACK_EPOCHS = 10
FALLBACK_BATCH_SIZE = 128


@dataclass(frozen=True)
class Parent:
    """The model a run warm-starts from: its id (lineage) and its checkpoint on this node."""

    model_id: str
    path: Path


class TrainStep:
    def __init__(self, runner: TrainerRunner, settings: TrainingSettings) -> None:
        self.runner = runner
        self.settings = settings

    def args(
        self, run_id: str, export: ExportResult, out_dir: Path, parent: Parent | None, token: int | None
    ) -> TrainerArgs:
        t = self.settings
        tier = export.settings  # the data tier's epochs and batch size, unless the settings pin them
        return TrainerArgs(
            data=Path(export.output),
            out=out_dir,
            epochs=t.epochs or (tier.epochs if tier else FALLBACK_EPOCHS),
            batch_size=t.batch_size or (tier.batch_size if tier else FALLBACK_BATCH_SIZE),
            data_hash=export.sha256,
            init=parent.path if parent else None,
            device=t.device,
            fencing_token=token,
            run_id=run_id,
            parent=parent.model_id if parent else None,
            channels=t.channels,
            blocks=t.blocks,
            lr=t.learning_rate,
            threads=t.threads or default_threads(t.max_concurrent),
            amp=t.amp,
            channels_last=t.channels_last,
            compile=t.compile,
            prefetch=t.prefetch,
        )

    async def run(
        self,
        config: str,
        run_id: str,
        export: ExportResult,
        out_dir: Path,
        parent: Parent | None,
        token: int | None,
        cancel: asyncio.Event,
        on_progress: Callable[[dict[str, Any]], None],
    ) -> TrainerOutcome:
        args = self.args(run_id, export, out_dir, parent, token)
        outcome = await self.runner.run(args, on_progress=on_progress, cancel=cancel, run_id=run_id)
        if outcome.exit_name == "INIT_MISMATCH" and parent is not None:
            log.warning("trainer.init_mismatch", config=config, parent=parent.model_id)
            outcome = await self.runner.run(
                args.replace(init=None), on_progress=on_progress, cancel=cancel, run_id=run_id
            )
        return outcome
