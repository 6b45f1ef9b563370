"""benchmarks/replication.py: two reports' verdicts side by side, contradictions found."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("replication", REPO / "benchmarks" / "replication.py")
replication = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(replication)

COLS = ["measure", "role", "setting", "scale", "focal", "other", "paired", "n_focal", "n_other", "diff", "ci95_lo",
        "ci95_hi", "p", "p_holm", "family", "mdd80", "verdict", "half_odd", "half_even"]


def _write(folder: Path, verdicts: dict[str, tuple[float, str]]) -> Path:
    folder.mkdir(parents=True)
    with open(folder / "comparisons.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLS)
        for other, (diff, verdict) in verdicts.items():
            w.writerow(["auc", "primary", "upd8", "s", "cppo", other, False, 20, 20, diff, diff - 0.05, diff + 0.05,
                        0.01, 0.03, 3, 0.06, verdict, diff, diff])
            w.writerow(["final", "descriptive", "upd8", "s", "cppo", other, False, 20, 20, -diff, 0, 0, 0.5, 1, 3,
                        0.1, "descriptive", 0, 0])
    return folder


def test_agreement_and_contradiction(tmp_path, capsys):
    a = _write(tmp_path / "a", {"pg_is": (0.2, "cppo higher"), "dppo": (0.01, "undecided"), "grpo": (-0.1, "cppo lower")})
    b = _write(tmp_path / "b", {"pg_is": (0.18, "cppo higher"), "dppo": (0.08, "cppo higher"), "grpo": (-0.02, "undecided")})
    assert replication.main([str(a), str(b), "--names", "1-20", "101-120"]) == 0
    out = capsys.readouterr().out
    assert "| upd8 | s | cppo − pg_is | +20.0 [+15.0, +25.0], Holm p 0.030: cppo higher |" in out
    assert "same verdict; differences of the same sign" in out and "0 contradiction(s)." in out
    assert out.count("decided in one run only (no contradiction)") == 2
    c = _write(tmp_path / "c", {"pg_is": (-0.2, "cppo lower"), "dppo": (0.0, "undecided"), "grpo": (-0.1, "undecided")})
    assert replication.main([str(a), str(c)]) == 1
    assert "**contradiction**" in capsys.readouterr().out
    assert replication.main([str(a), str(tmp_path / "none")]) == 2
