"""The builtin trainer: rollout engines, group advantages, the RL update loop, SFT warm start."""
