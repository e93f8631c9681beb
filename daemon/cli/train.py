"""``ringrift-daemon train CONFIG [--force] [--json]``: one pipeline pass now."""

from __future__ import annotations

import asyncio

from daemon.cli.exits import EXIT_BAD_ARGS, EXIT_FAILURE, EXIT_OK
from daemon.cli.output import not_enabled, print_error, print_json
from daemon.pipeline import PipelineResult
from daemon.service.app import build_app
from daemon.settings import Settings


def cli_train(
    settings: Settings, config_key: str, *, force: bool, as_json: bool, environ: dict[str, str]
) -> int:
    problem = not_enabled(config_key, settings.configs)
    if problem is not None:
        print_error(problem, as_json)
        return EXIT_BAD_ARGS

    async def go() -> PipelineResult:
        app = build_app(settings, environ)
        await app.start()
        try:
            return await app.pipeline.run_training(config_key, force=force, reason="manual")
        finally:
            await app.close()

    try:
        result = asyncio.run(go())
    except Exception as e:
        print_error(str(e), as_json)
        return EXIT_FAILURE
    if as_json:
        print_json(result.as_dict())
    else:
        print(f"{result.config_key}: {result.state}: {result.message}")
        print(
            f"  export {result.export_time:.1f}s (cache_hit={result.cache_hit}, samples={result.samples}), "
            f"training {result.training_time:.1f}s, model {result.model_id}"
        )
    return EXIT_OK if result.success else EXIT_FAILURE
