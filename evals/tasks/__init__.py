"""lm-eval task files of cppo-bench (``cppo_<benchmark>.yaml``) and the functions they reference
(``utils.py``). A package only so that installs ship ``utils.py`` beside the YAML files; lm-eval
loads both by path (``TaskManager(include_path=evals/tasks)``)."""
