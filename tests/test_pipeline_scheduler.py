"""Flow-matching scheduler: shifted warp of the few-step schedule and the noise algebra."""
import torch

from lltrace.pipeline.scheduler import FlowMatchScheduler


def test_warped_steps_match_the_shift_5_formula():
    s = FlowMatchScheduler()
    warped = s.warp([1000, 750, 500, 250])
    assert warped[0] == 1000.0
    # shift 5: sigma' = 5s / (1 + 4s); for s = 0.75 -> 0.9375 (up to the sigma_min table spacing)
    for nominal, t in zip([750, 500, 250], warped[1:]):
        sig = nominal / 1000
        assert abs(t / 1000 - 5 * sig / (1 + 4 * sig)) < 5e-3
    assert warped == sorted(warped, reverse=True)


def test_renoise_then_denoise_with_the_true_flow_recovers_x0():
    s = FlowMatchScheduler()
    x0, noise = torch.randn(2, 16, 3, 4, 4), torch.randn(2, 16, 3, 4, 4)
    for t in s.warp([1000, 750, 500, 250]):
        x_t = s.add_noise(x0, noise, t)
        assert torch.allclose(s.to_x0(x_t, noise - x0, t), x0, atol=1e-5)


def test_context_noise_zero_is_clean():
    s = FlowMatchScheduler()
    x0 = torch.randn(3, 3)
    assert s.sigma(0) == 0.0 and torch.equal(s.add_noise(x0, torch.randn(3, 3), 0), x0)
