"""Mixed precision: bf16 on the CPU, fp16's gradient scaler saved with the checkpoint, skipped
steps counted and refused past a threshold."""
import pytest
import torch

from apl.cli import main
from apl.train import TrainConfig, Trainer

TINY = dict(dataset="digits", dim=8, batch_size=64, epochs=2, steps_per_epoch=2, threads=1)


@pytest.mark.parametrize("chunk", [None, 16])
def test_bf16_trains_and_the_loss_runs_in_float32(tmp_path, monkeypatch, chunk):
    seen = []
    import apl.train.loop as loop

    real = loop.build_loss

    def spy(*a, **k):
        fn = real(*a, **k)
        return lambda d, y: (seen.append(d.dtype), fn(d, y))[1]

    monkeypatch.setattr(loop, "build_loss", spy)
    amp = Trainer(TrainConfig(amp="bf16", chunk_size=chunk, **TINY), tmp_path / "a", log=lambda m: None, progress=False).run()
    fp32 = Trainer(TrainConfig(chunk_size=chunk, **TINY), tmp_path / "b", log=lambda m: None, progress=False).run()
    assert set(seen) == {torch.float32}
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in amp)
    assert amp[0]["train_loss"] != fp32[0]["train_loss"]  # the forward did run in bf16
    assert abs(amp[0]["train_loss"] - fp32[0]["train_loss"]) < 0.05


def test_fp16_scaler_is_saved_and_restored(tmp_path):
    cfg = TrainConfig(amp="fp16", **TINY)
    Trainer(cfg, tmp_path / "full", log=lambda m: None, progress=False).run()
    Trainer(cfg, tmp_path / "cut", log=lambda m: None, progress=False).run(stop_after=1)
    Trainer(cfg, tmp_path / "cut", log=lambda m: None, progress=False).run(resume=True)
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True) for d in ("full", "cut"))
    assert a["scaler"] is not None and a["scaler"] == b["scaler"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_bad_amp_is_refused(capsys):
    with pytest.raises(ValueError, match="--amp must be one of bf16, fp16, got 'fp8'"):
        TrainConfig(amp="fp8").validate()
    with pytest.raises(SystemExit):
        main(["train", "--amp", "fp8"])
    assert "argument --amp: invalid choice: 'fp8'" in capsys.readouterr().err


class _Scaler:
    """A stand-in GradScaler whose scale halves on the steps listed in `skips`."""

    def __init__(self, skips):
        self.scale, self.skips, self.n = 65536.0, set(skips), 0

    def get_scale(self):
        return self.scale

    def step(self, optimizer):
        pass

    def update(self):
        if self.n in self.skips:
            self.scale /= 2
        self.n += 1


def test_a_run_that_skips_most_of_its_steps_stops_with_a_clear_error():
    from apl.train.scaler_watch import WARMUP, ScalerWatch, SkippedStepsError

    watch = ScalerWatch(_Scaler(range(1000)))  # every step skipped, as with fp16 GeM on the CPU before
    with pytest.raises(SkippedStepsError, match=r"--amp fp16: \d+ of the last \d+ optimizer steps were skipped.*--amp bf16"):
        for _ in range(WARMUP + 30):
            watch.step(None)
    healthy = ScalerWatch(_Scaler([0, 1, 2, 40]))  # the scale search at the start, then a rare overflow
    for _ in range(100):
        healthy.step(None)
    assert healthy.end_epoch() == 4 and healthy.end_epoch() == 0


def test_fp16_on_the_cpu_trains_and_says_what_it_costs(tmp_path):
    lines = []
    cfg = TrainConfig(**{**TINY, "amp": "fp16", "epochs": 1, "steps_per_epoch": 30})
    history = Trainer(cfg, tmp_path / "r", log=lines.append, progress=False).run()
    assert any(ln.startswith("--amp fp16 on the CPU:") and "overflows" in ln for ln in lines)
    # the scaler's search for its scale, not every step (GeM in float16 underflowed: all 30 skipped)
    assert history[-1]["skipped_steps"] <= 18


def test_cpu_note_says_slower_where_the_cpu_has_no_native_half_precision():
    """What --amp costs on a CPU depends on its flags (benchmarks/bench_amp_cpu.py measures it)."""
    from apl.train.amp import cpu_note

    plain = {"avx2", "f16c", "fma"}
    for amp, dtype in (("bf16", "torch.bfloat16"), ("fp16", "torch.float16")):
        note = cpu_note(amp, plain)
        assert f"this CPU has no native {dtype} arithmetic" in note and "slower than float32" in note
        assert "Leave out --amp on this machine" in note
    assert cpu_note("bf16", plain | {"amx_bf16"}) is None  # native: nothing to say
    assert "slower" not in cpu_note("fp16", plain | {"avx512_fp16"}) and "overflows" in cpu_note("fp16", plain | {"avx512_fp16"})


def test_cpu_note_where_the_flags_cannot_be_read(monkeypatch):
    import apl.train.amp as amp

    monkeypatch.setattr(amp, "cpu_flags", lambda: None)
    assert "this CPU may have no native torch.bfloat16 arithmetic" in amp.cpu_note("bf16")
