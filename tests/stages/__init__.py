"""Per-stage tests: each stage run on its own with ``stagerun.run_until``."""
