"""Calibration: problem sources, rollouts, verification of replies, selection policies and the calibrator."""
