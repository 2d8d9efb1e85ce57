"""Design-space studies: sweeps over training settings, scaling-law fits, critical batch size.

    from trimodal.study import preset, run_study
    run_study(preset("tiny"), "runs/study_tiny")
"""

from trimodal.study.presets import PRESETS, preset
from trimodal.study.sweep import (Block, StudyTrainer, SweepConfig, SweepPoint, collect, expand, make_report,
                                  run_study, run_sweep)

__all__ = ["PRESETS", "Block", "StudyTrainer", "SweepConfig", "SweepPoint", "collect", "expand", "make_report",
           "preset", "run_study", "run_sweep"]
