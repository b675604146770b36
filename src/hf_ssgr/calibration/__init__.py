"""Calibration: problem sources (`sources`), selection policies (`policies`), R1-style prompts (`prompts`),
generation engines (`engines`), the rollout store (`store`), `CalibrationConfig` (`config`) and `SSGRCalibrator`
(`calibrator`)."""
