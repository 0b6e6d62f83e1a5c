"""The ``neuraltpp`` CLI: help texts, bad input (exit 2 naming the argument), end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neuraltpp.cli import main
from neuraltpp.data import load_dataset
from neuraltpp.metrics import load_metrics

COMMANDS = ("train", "eval", "simulate", "plot", "demo", "fetch")
TINY = ["--d-model", "8", "--n-layers", "1", "--n-heads", "2", "--d-ff", "8", "--d-state", "4"]


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse exits for --help and usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# What a user needs from each command's --help: its options, their choices and defaults.
HELP = {
    "train": [
        "--data DATA",
        "hawkes-sim, ucerf3, ridgecrest",
        "--model {thp,rothp,mhp,mhpe,mhp-exact}",
        "--out OUT",
        "--resume",
        "--overwrite",
        "--epochs EPOCHS",
        "--batch-size BATCH_SIZE",
        "--lr LR",
        "--patience PATIENCE",
        "--type-loss-weight TYPE_LOSS_WEIGHT",
        "--gap-loss-weight GAP_LOSS_WEIGHT",
        "--max-sequences MAX_SEQUENCES",
        "--time-scale TIME_SCALE",
        "--d-model D_MODEL",
        "--dt-fn {authors,affine-softplus,raw}",
        "(default affine-softplus)",
        "--ll-mode {correct,legacy}",
        "--first-event {condition,start-state}",
        "--tail, --no-tail",
        "--integration {gauss-legendre,monte-carlo}",
        "--nodes NODES",
        "(default 16)",
        "--quiet",
        "--threads THREADS",
    ],
    "eval": [
        "--checkpoint CHECKPOINT [CHECKPOINT ...]",
        "--data DATA",
        "--split {train,dev,test}",
        "(default test)",
        "--out OUT",
        "--no-predictions",
        "likelihood (default: the checkpoint's training setting)",
        "--ll-mode {correct,legacy}",
    ],
    "simulate": [
        "--out OUT",
        "--format {easytpp,nhp}",
        "--types TYPES",
        "(default 5)",
        "--mu MU",
        "--alpha ALPHA",
        "--beta BETA",
        "--radius RADIUS",
        "--sequences SEQUENCES",
        "(default 300)",
        "--horizon HORIZON",
        "(default 20.0)",
        "--seed SEED",
    ],
    "plot": [
        "--checkpoint CHECKPOINT",
        "--data DATA",
        "--index INDEX",
        "--points POINTS",
        "--out OUT",
    ],
    "demo": ["--out OUT", "(default runs/demo)", "--epochs EPOCHS", "default 30", "--seed SEED"],
    "fetch": ["pycsep==0.8.0", "$NEURALTPP_CACHE", "(default ~/.cache/neuraltpp)"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(capsys: pytest.CaptureFixture[str], command: str):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert out.startswith(f"usage: neuraltpp {command}")
    text = " ".join(out.split())  # argparse wraps lines wherever it likes
    missing = [item for item in HELP[command] if item not in text]
    assert not missing, f"{command} --help lacks {missing}"


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture[str]):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    lines = out.splitlines()
    start = lines.index("  COMMAND") + 1
    listed = [
        line.split()[0] for line in lines[start:] if line.startswith("    ") and line[4] != " "
    ]
    assert listed == list(COMMANDS) and "--version" in out  # each with its one-line summary
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == "neuraltpp 0.1.0"


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    code = main(
        [
            "simulate",
            "--out",
            str(out),
            "--types",
            "2",
            "--sequences",
            "20",
            "--horizon",
            "10",
            "--seed",
            "3",
        ]
    )
    assert code == 0
    return out


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["train", "--data", "x", "--out", "o", "--epochs", "-1"], "--epochs"),
        (["train", "--data", "x", "--out", "o", "--lr", "nan"], "--lr"),
        (["train", "--data", "x", "--out", "o", "--model", "rnn"], "--model"),
        (["train", "--data", "x", "--out", "o", "--dt-fn", "relu"], "--dt-fn"),
        (["train", "--out", "o"], "--data"),
        (["train", "--data", "/no/such/data", "--out", "{tmp}/o"], "/no/such/data"),
        (
            ["train", "--data", "{sim}", "--out", "{tmp}/o", "--d-model", "6", "--n-heads", "4"],
            "n_heads",
        ),
        (
            ["train", "--data", "{sim}", "--out", "{tmp}/o", "--model", "mhp-exact",
             "--d-conv", "4"],
            "mhp-exact",
        ),
        (["simulate", "--out", "o", "--types", "0"], "--types"),
        (
            [
                "simulate",
                "--out",
                "{tmp}/s",
                "--types",
                "2",
                "--mu",
                "1,2,3",
                "--alpha",
                "0.1",
                "--beta",
                "1",
            ],
            "--mu",
        ),
        (
            [
                "simulate",
                "--out",
                "{tmp}/s",
                "--types",
                "2",
                "--mu",
                "1",
                "--alpha",
                "0.1,0.2",
                "--beta",
                "1",
            ],
            "--alpha",
        ),
        (
            [
                "simulate",
                "--out",
                "{tmp}/s",
                "--types",
                "1",
                "--mu",
                "1",
                "--alpha",
                "1.5",
                "--beta",
                "1",
            ],
            "spectral radius",
        ),
        (["simulate", "--out", "{tmp}/s", "--mu", "1"], "--mu, --alpha and --beta"),
        (["simulate", "--out", "o", "--alpha", "a,b"], "--alpha"),
        (
            ["eval", "--checkpoint", "{tmp}/none.pt", "--data", "{sim}", "--out", "{tmp}/m.json"],
            "--checkpoint",
        ),
        (
            ["eval", "--checkpoint", "{sim}/params.json", "--data", "{sim}", "--out", "m.json"],
            "params.json",
        ),
        (
            ["plot", "--checkpoint", "c", "--data", "{sim}", "--out", "p.png", "--index", "-2"],
            "--index",
        ),
        (
            ["eval", "--checkpoint", "c", "--data", "{sim}/dev.json", "--out", "{tmp}/m.json"],
            "error: --split: ",
        ),
        (
            ["plot", "--checkpoint", "c", "--data", "{sim}", "--out", "p.png", "--points", "1"],
            "error: --points: ",
        ),
        (
            ["plot", "--checkpoint", "{tmp}/c", "--data", "{sim}", "--out", "p"],
            "error: --checkpoint: ",
        ),
        (["demo", "--epochs", "0"], "--epochs"),
        (
            ["train", "--data", "{sim}", "--out", "{tmp}/o", "--resume", "--overwrite"],
            "not allowed with argument",
        ),
        (["simulate", "--out", "{tmp}/s", "--sequences", "2"], "--sequences"),
        (["simulate", "--out", "{sim}/params.json"], "error: --out: "),
        (["simulate", "--out", "{sim}"], "--overwrite replaces it"),
        (["eval", "--checkpoint", "c", "--data", "{sim}", "--out", "{tmp}"], "error: --out: "),
        (["plot", "--checkpoint", "c", "--data", "{sim}", "--out", "{tmp}"], "error: --out: "),
        (
            ["eval", "--checkpoint", "c", "--data", "{sim}", "--out", "{sim}/params.json/m.json"],
            "params.json is not a directory",
        ),
        (
            ["plot", "--checkpoint", "c", "--data", "d", "--out", "p.png", "--threads", "0"],
            "--threads",
        ),
    ],
)
def test_bad_input_exits_2_naming_the_argument(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sim_dir: Path, argv: list[str], named: str
):
    argv = [a.format(tmp=tmp_path, sim=sim_dir) for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "error: " in err and named in err
    assert "Traceback" not in err


def test_simulate_formats_and_true_ll(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    code, out, _ = run(
        capsys,
        "simulate",
        "--out",
        tmp_path / "nhp",
        "--format",
        "nhp",
        "--types",
        "2",
        "--sequences",
        "10",
        "--horizon",
        "5",
        "--mu",
        "0.5,0.3",
        "--alpha",
        "0.2,0.1,0.1,0.2",
        "--beta",
        "1.5",
    )
    assert code == 0 and "wrote" in out
    splits = load_dataset(tmp_path / "nhp")
    assert sorted(splits) == ["dev", "test", "train"]
    assert sum(len(s) for s in splits.values()) == 10 and splits["train"].num_types == 2
    params = json.loads((tmp_path / "nhp" / "params.json").read_text())
    assert params["mu"] == [0.5, 0.3] and params["beta"] == 1.5
    assert set(params["true_ll_per_event"]["train"]) == {"condition", "start-state"}


def test_simulate_train_eval_plot_end_to_end(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sim_dir: Path
):
    run_dir = tmp_path / "run"
    code, out, err = run(
        capsys,
        "train",
        "--data",
        sim_dir,
        "--model",
        "mhp",
        "--out",
        run_dir,
        "--epochs",
        "1",
        "--batch-size",
        "4",
        *TINY,
    )
    assert code == 0, err
    assert {"best.pt", "last.pt", "train_result.json", "run.json", "test_metrics.json"} <= {
        p.name for p in run_dir.iterdir()
    }
    assert "best epoch" in out and "mode correct" in out and "test: LL/event" in out
    assert "epoch" in err  # progress bar on stderr

    code, _, err = run(capsys, "train", "--data", sim_dir, "--out", run_dir, "--epochs", "1")
    assert code == 2 and "--resume" in err  # refuses to clobber a run
    code, out, _ = run(
        capsys,
        "train",
        "--data",
        sim_dir,
        "--model",
        "mhp",
        "--out",
        run_dir,
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--resume",
        "--quiet",
        *TINY,
    )
    assert code == 0
    history = json.loads((run_dir / "train_result.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1, 2]

    metrics_path = tmp_path / "metrics.json"
    code, out, _ = run(
        capsys,
        "eval",
        "--checkpoint",
        run_dir,
        "--data",
        sim_dir,
        "--split",
        "test",
        "--out",
        metrics_path,
        "--quiet",
    )
    assert code == 0 and "LL/event" in out
    metrics = load_metrics(metrics_path)
    test = load_dataset(sim_dir)["test"]
    assert metrics.likelihood.n_events == test.n_events - len(test)
    assert metrics.likelihood.mode == "correct"
    assert metrics.model_prediction is not None
    assert metrics.model_prediction.n_events == test.n_events - len(test)
    assert metrics == load_metrics(run_dir / "test_metrics.json")  # same checkpoint, same data
    code, _, _ = run(
        capsys,
        "eval",
        "--checkpoint",
        run_dir / "best.pt",
        "--data",
        sim_dir,
        "--out",
        metrics_path,
        "--ll-mode",
        "legacy",
        "--no-predictions",
        "--quiet",
    )
    legacy = load_metrics(metrics_path)
    assert code == 0 and legacy.likelihood.mode == "legacy"
    assert legacy.likelihood.n_events == test.n_events and legacy.model_prediction is None

    spread_path = tmp_path / "spread.json"
    code, out, _ = run(
        capsys,
        "eval",
        "--checkpoint",
        run_dir / "best.pt",
        run_dir / "last.pt",
        "--data",
        sim_dir,
        "--out",
        spread_path,
        "--no-predictions",
        "--quiet",
    )
    assert code == 0 and "over 2 runs" in out
    spread = json.loads(spread_path.read_text())
    lls = [r["likelihood"]["ll_per_event"] for r in spread["runs"]]
    assert [Path(r["checkpoint"]).name for r in spread["runs"]] == ["best.pt", "last.pt"]
    assert spread["aggregate"]["mean"]["likelihood.ll_per_event"] == pytest.approx(sum(lls) / 2)
    assert spread["aggregate"]["std"]["likelihood.ll_per_event"] == pytest.approx(
        abs(lls[0] - lls[1]) / 2**0.5
    )

    png = tmp_path / "plot.png"
    code, out, _ = run(
        capsys, "plot", "--checkpoint", run_dir, "--data", sim_dir, "--index", "1", "--out", png
    )
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"
    code, _, err = run(
        capsys, "plot", "--checkpoint", run_dir, "--data", sim_dir, "--index", "99", "--out", png
    )
    assert code == 2 and "--index" in err


def test_eval_rejects_data_with_other_types(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sim_dir: Path
):
    assert (
        main(
            [
                "train",
                "--data",
                str(sim_dir),
                "--out",
                str(tmp_path / "r"),
                "--epochs",
                "0",
                "--quiet",
                *TINY,
            ]
        )
        == 0
    )
    other = tmp_path / "three"
    assert main(["simulate", "--out", str(other), "--types", "3", "--sequences", "10"]) == 0
    code, _, err = run(
        capsys,
        "eval",
        "--checkpoint",
        tmp_path / "r",
        "--data",
        other,
        "--out",
        tmp_path / "m.json",
    )
    assert code == 2 and "--data" in err and "3 event types" in err


def _one_error_line(err: str) -> str:
    """The single ``error:`` line of a failed command (no traceback)."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize(
    "content", [b"not a pickle at all", b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}"]
)
def test_unreadable_pickle_data_is_one_error_naming_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes
):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.pkl").write_bytes(content)
    code, _, err = run(capsys, "train", "--data", data, "--out", tmp_path / "run", "--quiet")
    assert code == 2 and "train.pkl: not a readable pickle" in _one_error_line(err)
    assert not (tmp_path / "run").exists()


def test_overwrite_by_a_diverging_run_keeps_the_previous_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sim_dir: Path
):
    out = tmp_path / "run"
    train = ["train", "--data", sim_dir, "--out", out, "--batch-size", "4", "--quiet", *TINY]
    code, _, err = run(capsys, *train, "--epochs", "1")
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run(capsys, *train, "--epochs", "2", "--overwrite", "--lr", "1e6")
    assert code == 2
    assert "training diverged at epoch 1, step " in _one_error_line(err)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no staging directory left


def test_simulate_replaces_only_with_overwrite(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    out = tmp_path / "sim"
    simulate = ["simulate", "--out", out, "--types", "2", "--sequences", "10", "--horizon", "20"]
    assert run(capsys, *simulate)[0] == 0
    first = (out / "train.json").read_bytes()
    code, _, err = run(capsys, *simulate, "--seed", "1")
    assert code == 2 and "--overwrite" in _one_error_line(err)
    assert (out / "train.json").read_bytes() == first
    assert run(capsys, *simulate, "--seed", "1", "--overwrite")[0] == 0
    assert (out / "train.json").read_bytes() != first
    assert all(s.window_end == 20.0 for s in load_dataset(out)["test"].sequences)
